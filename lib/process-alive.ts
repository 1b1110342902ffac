/**
 * Whether a process with this pid exists: signal 0 delivers nothing and only checks. EPERM
 * means it exists but belongs to another user. (A zombie counts as existing.)
 */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
