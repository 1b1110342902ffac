/**
 * The sandbox driver's seccomp filter, as the classic-BPF program bwrap's `--seccomp FD`
 * loads. A deny list, not an allow list: Node, V8 and isolated-vm use a wide and changing
 * set of syscalls, and an allow list that misses one kills a worker at some rare moment.
 * What it denies are the kernel surfaces a function's worker never needs and an escape
 * would: tracing other processes, mounting and namespaces, kernel modules and kexec, BPF,
 * perf, keyrings, userfaultfd, io and quota controls, reboot.
 *
 * Why not libseccomp: Debian ships libseccomp as a C library (and python3-seccomp); using it
 * would mean C or another runtime package at start. The program below is the fixed shape
 * libseccomp itself emits for a deny list (check the architecture, refuse the x32 ABI,
 * compare the syscall number), 2 + 3 + N instructions, generated from the table.
 *
 * x86_64 only: on another architecture `seccompFilter()` returns undefined and the driver
 * says that no filter is loaded.
 */

/** Denied syscalls, x86_64 numbers (linux/arch/x86/entry/syscalls/syscall_64.tbl). */
export const DENIED_SYSCALLS_X86_64: Readonly<Record<string, number>> = {
  ptrace: 101,
  syslog: 103,
  personality: 135,
  pivot_root: 155,
  chroot: 161,
  acct: 163,
  mount: 165,
  umount2: 166,
  swapon: 167,
  swapoff: 168,
  reboot: 169,
  sethostname: 170,
  setdomainname: 171,
  iopl: 172,
  ioperm: 173,
  init_module: 175,
  delete_module: 176,
  quotactl: 179,
  lookup_dcookie: 212,
  kexec_load: 246,
  add_key: 248,
  request_key: 249,
  keyctl: 250,
  unshare: 272,
  perf_event_open: 298,
  fanotify_init: 300,
  name_to_handle_at: 303,
  open_by_handle_at: 304,
  setns: 308,
  process_vm_readv: 310,
  process_vm_writev: 311,
  finit_module: 313,
  kexec_file_load: 320,
  bpf: 321,
  userfaultfd: 323,
  open_tree: 428,
  move_mount: 429,
  fsopen: 430,
  fsconfig: 431,
  fsmount: 432,
  fspick: 433,
  mount_setattr: 442,
};

const CLONE_X86_64 = 56;
const CLONE3_X86_64 = 435;
/** CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET (+ CLONE_NEWTIME 0x80). */
const CLONE_NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x00000080;

const AUDIT_ARCH_X86_64 = 0xc000003e;
const X32_SYSCALL_BIT = 0x40000000;
const EPERM = 1;
const ENOSYS = 38;

// Classic BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h).
const LD_W_ABS = 0x20;
const JEQ_K = 0x15;
const JGE_K = 0x35;
const JSET_K = 0x45;
const RET_K = 0x06;
const RET_ALLOW = 0x7fff0000;
const RET_ERRNO = 0x00050000;
const RET_KILL_PROCESS = 0x80000000;
// struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6].
const OFFSET_NR = 0;
const OFFSET_ARCH = 4;
const OFFSET_ARG0_LOW = 16;

interface Insn {
  readonly code: number;
  readonly jt: number;
  readonly jf: number;
  readonly k: number;
}

/**
 * The filter as bytes (struct sock_filter[]: u16 code, u8 jt, u8 jf, u32 k, little-endian),
 * or undefined where there is no table for this architecture.
 */
export function seccompFilter(arch: string = process.arch): Buffer | undefined {
  if (arch !== 'x64') return undefined;
  const denied = Object.values(DENIED_SYSCALLS_X86_64);
  const program: Insn[] = [];
  const at = () => program.length;
  // Filled in below, when the targets' indexes are known.
  const jumps: Array<{ index: number; to: 'deny' | 'allow' | 'enosys' | 'clone'; branch: 'jt' | 'jf' }> = [];
  const push = (code: number, k: number, jt = 0, jf = 0) => program.push({ code, jt, jf, k });

  push(LD_W_ABS, OFFSET_ARCH);
  push(JEQ_K, AUDIT_ARCH_X86_64, 1, 0);
  push(RET_K, RET_KILL_PROCESS);
  push(LD_W_ABS, OFFSET_NR);
  // The x32 ABI reaches the same kernel entry points under other numbers: refuse it whole.
  jumps.push({ index: at(), to: 'deny', branch: 'jt' });
  push(JGE_K, X32_SYSCALL_BIT);
  for (const nr of denied) {
    jumps.push({ index: at(), to: 'deny', branch: 'jt' });
    push(JEQ_K, nr);
  }
  // clone3 passes its flags in memory a filter cannot read: ENOSYS makes glibc fall back to clone.
  jumps.push({ index: at(), to: 'enosys', branch: 'jt' });
  push(JEQ_K, CLONE3_X86_64);
  jumps.push({ index: at(), to: 'clone', branch: 'jt' });
  push(JEQ_K, CLONE_X86_64);
  const allow = at();
  push(RET_K, RET_ALLOW);
  const clone = at();
  // clone(flags, …): threads and forks pass; new namespaces do not.
  push(LD_W_ABS, OFFSET_ARG0_LOW);
  push(JSET_K, CLONE_NAMESPACE_FLAGS, 1, 0);
  push(RET_K, RET_ALLOW);
  const deny = at();
  push(RET_K, RET_ERRNO | EPERM);
  const enosys = at();
  push(RET_K, RET_ERRNO | ENOSYS);

  const targets = { deny, allow, enosys, clone };
  for (const jump of jumps) {
    const offset = targets[jump.to] - jump.index - 1;
    if (offset > 255) throw new Error(`seccomp filter: a jump of ${offset} instructions does not fit classic BPF`);
    const insn = program[jump.index];
    if (insn === undefined) throw new Error('seccomp filter: jump from outside the program');
    program[jump.index] = { ...insn, [jump.branch]: offset };
  }
  const bytes = Buffer.alloc(program.length * 8);
  program.forEach((insn, i) => {
    bytes.writeUInt16LE(insn.code, i * 8);
    bytes.writeUInt8(insn.jt, i * 8 + 2);
    bytes.writeUInt8(insn.jf, i * 8 + 3);
    bytes.writeUInt32LE(insn.k >>> 0, i * 8 + 4);
  });
  return bytes;
}
