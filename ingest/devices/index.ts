/** Device identities: the registry (ingest/devices) and what the broker asks of it. */
export type { AuthFailure, AuthVerdict, Device, DeviceDirectory } from './types.ts';
export {
  DeviceRegistry,
  DEVICE_ID_PATTERN,
  DEVICES_FILE,
  DEVICES_FOLDER,
  JOURNAL_FILE,
  SCRYPT_DEFAULTS,
  deviceIdProblem,
  type DeviceChange,
  type DevicePage,
  type DeviceRegistryOptions,
  type IssuedToken,
  type ListOptions,
  type NewDevice,
  type ScryptParams,
} from './registry.ts';
export { deviceListOf, parseDeviceCsv } from './device-list.ts';
