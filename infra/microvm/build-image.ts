/**
 * Builds (or finds in the cache) the microvm guest image and the snapshot its workers are
 * restored from, so the first `voltline up --worker-driver microvm` does not wait for
 * them. The driver's factory does the same when they are missing; this only does it ahead.
 *
 *   bash infra/microvm/build-image.sh [--accel tcg|kvm] [--memory-mb 512] [--no-snapshot]
 *
 * Needs the network once (apt-get download of the Debian kernel package), nothing else.
 */
import { parseArgs } from 'node:util';
import { guestImage, microVmDriver } from '../../functions-runtime/drivers/microvm/index.ts';

const { values } = parseArgs({
  options: {
    accel: { type: 'string', default: 'tcg' },
    'memory-mb': { type: 'string', default: '512' },
    'no-snapshot': { type: 'boolean', default: false },
  },
});
const accel = values.accel === 'kvm' ? 'kvm' : 'tcg';
const started = performance.now();
const image = await guestImage();
process.stdout.write(`guest image ${image.key} (${image.built ? 'built' : 'cached'}): ${image.dir}\n`);
if (!values['no-snapshot']) {
  const driver = await microVmDriver({ accel, memoryMb: Number(values['memory-mb']) });
  process.stdout.write(`${driver.description ?? driver.name}\n`);
}
process.stdout.write(`done in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
