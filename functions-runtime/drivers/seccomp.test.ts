/** The sandbox's seccomp deny list, loaded by a real bwrap around busybox (busybox-static). */
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { seccompFilter } from './seccomp.ts';

const BUSYBOX = '/bin/busybox';

/** Runs a busybox applet as uid 65534 in bwrap's namespaces, with or without the filter; its exit status. */
function inBwrap(withFilter: boolean, applet: readonly string[]): { status: number | null; stderr: string } {
  if (!existsSync(BUSYBOX)) throw new Error('busybox is not installed: run infra/ensure.sh or apt-get install busybox-static');
  const file = path.join(os.tmpdir(), `voltline-seccomp-test-${process.pid}.bpf`);
  writeFileSync(file, seccompFilter() ?? Buffer.alloc(0));
  const fd = openSync(file, 'r');
  try {
    const args = ['--reuid=65534', '--regid=65534', '--clear-groups', '/usr/bin/bwrap', '--unshare-all', '--unshare-user', '--die-with-parent'];
    args.push('--ro-bind', BUSYBOX, BUSYBOX, '--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp');
    if (withFilter) args.push('--seccomp', '3');
    const run = spawnSync('/usr/bin/setpriv', [...args, BUSYBOX, ...applet], { stdio: ['ignore', 'pipe', 'pipe', fd], encoding: 'utf8', timeout: 10_000 });
    return { status: run.status, stderr: run.stderr };
  } finally {
    closeSync(fd);
    rmSync(file);
  }
}

describe('seccomp deny list', () => {
  it('is a whole number of BPF instructions for x86_64, and none elsewhere', () => {
    const program = seccompFilter('x64');
    expect(program).toBeDefined();
    expect((program?.length ?? 0) % 8).toBe(0);
    expect(seccompFilter('arm64')).toBeUndefined();
  });

  it('refuses new namespaces (unshare) that the same sandbox allows without it', () => {
    expect(inBwrap(false, ['unshare', '-U', '-r', 'true']).status).toBe(0);
    const denied = inBwrap(true, ['unshare', '-U', '-r', 'true']);
    expect(denied.status).not.toBe(0);
    expect(denied.stderr).toMatch(/Operation not permitted/);
  });

  it('refuses setns with EPERM (without it the kernel answers EINVAL)', () => {
    expect(inBwrap(false, ['nsenter', '-t', '1', '-U', 'true']).stderr).toMatch(/Invalid argument/);
    expect(inBwrap(true, ['nsenter', '-t', '1', '-U', 'true']).stderr).toMatch(/Operation not permitted/);
  });

  it('lets ordinary work through: fork, exec, files, pipes', () => {
    const run = inBwrap(true, ['sh', '-c', 'echo hi > /tmp/x && (cat /tmp/x | /bin/busybox wc -c) && /bin/busybox true']);
    expect(run).toMatchObject({ status: 0 });
  });
});
