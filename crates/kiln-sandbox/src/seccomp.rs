//! The system-call filter every program runs under: a deny list of calls no submission needs and
//! that would let it reach past its sandbox (namespaces, mounts, tracing, kernel modules, raw
//! network when networking is off). Denied calls fail with EPERM rather than killing the program,
//! so the program's own error handling reports them.

use seccompiler::{sock_filter, BpfProgram};

/// The compiled filter, built before fork so that installing it allocates nothing.
pub struct SyscallFilter {
    program: BpfProgram,
}

/// `AUDIT_ARCH_*` of this build's architecture: a call made through another architecture's
/// entry (i386 on x86-64) is killed rather than read with the wrong numbers.
fn audit_arch() -> u32 {
    if cfg!(target_arch = "aarch64") {
        0xC000_00B7
    } else if cfg!(target_arch = "riscv64") {
        0xC000_00F3
    } else {
        0xC000_003E
    }
}

const DENIED: &[libc::c_long] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
    libc::SYS_reboot,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_syslog,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_fsopen,
    libc::SYS_fsmount,
    libc::SYS_fsconfig,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_adjtimex,
    // A job's processes stay on the cores it was given (`src/pods/cores.rs`).
    libc::SYS_sched_setaffinity,
];

const NAMESPACE_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWNS,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWCGROUP,
];

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGE: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const JSET: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const RET: u16 = 0x06; // BPF_RET | BPF_K
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// `struct seccomp_data`: the call's number, its architecture, the low half of its first
/// argument (little-endian).
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0: u32 = 16;
/// x86-64's x32 calls carry this bit; they reach the same kernel code under other numbers.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Where a jump goes: the next instruction, or one of the returns after the checks.
#[derive(Clone, Copy)]
enum To {
    Next,
    Allow,
    Deny,
    NoSys,
    Kill,
}

/// A jump in the filter would be longer than classic BPF's 255 instructions: the list of denied
/// calls has outgrown the filter's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the seccomp filter is too long")]
pub struct FilterTooLong;

impl SyscallFilter {
    /// One program (one attachment, one pass per call): the architecture, then x32 calls and
    /// clone3 (ENOSYS: its flags are in memory, out of a filter's reach, and the C library then
    /// falls back to clone, whose flags are checked), the denied calls, clone with a namespace
    /// flag and, without network, sockets of the IP, packet and netlink families: all EPERM.
    pub fn new(network: bool) -> Result<SyscallFilter, FilterTooLong> {
        let mut body: Vec<(u16, u32, To, To)> = vec![
            (LD_W_ABS, ARCH, To::Next, To::Next),
            (JEQ, audit_arch(), To::Next, To::Kill),
            (LD_W_ABS, NR, To::Next, To::Next),
        ];
        if cfg!(target_arch = "x86_64") {
            body.push((JGE, X32_SYSCALL_BIT, To::Deny, To::Next));
        }
        body.push((JEQ, libc::SYS_clone3 as u32, To::NoSys, To::Next));
        for &nr in DENIED {
            body.push((JEQ, nr as u32, To::Deny, To::Next));
        }
        let namespaces = NAMESPACE_FLAGS.iter().fold(0u32, |m, &f| m | f as u32);
        // Not clone: skip its two-instruction check.
        body.push((JEQ, libc::SYS_clone as u32, To::Next, To::Next));
        let skip_clone = body.len() - 1;
        body.push((LD_W_ABS, ARG0, To::Next, To::Next));
        body.push((JSET, namespaces, To::Deny, To::Allow));
        if !network {
            body.push((JEQ, libc::SYS_socket as u32, To::Next, To::Allow));
            body.push((LD_W_ABS, ARG0, To::Next, To::Next));
            for af in [
                libc::AF_INET,
                libc::AF_INET6,
                libc::AF_PACKET,
                libc::AF_NETLINK,
            ] {
                body.push((JEQ, af as u32, To::Deny, To::Next));
            }
        }
        // The returns follow the body: allow first, so that falling off the end allows.
        let n = body.len();
        let at = |to: To, i: usize| -> Result<u8, FilterTooLong> {
            let target = match to {
                To::Next => i + 1,
                To::Allow => n,
                To::Deny => n + 1,
                To::NoSys => n + 2,
                To::Kill => n + 3,
            };
            u8::try_from(target - (i + 1)).map_err(|_| FilterTooLong)
        };
        let mut program = Vec::with_capacity(n + 4);
        for (i, &(code, k, jt, jf)) in body.iter().enumerate() {
            let (jt, jf) = if code == LD_W_ABS {
                (0, 0)
            } else if i == skip_clone {
                (0, 2)
            } else {
                (at(jt, i)?, at(jf, i)?)
            };
            program.push(sock_filter { code, jt, jf, k });
        }
        for k in [
            RET_ALLOW,
            RET_ERRNO | libc::EPERM as u32,
            RET_ERRNO | libc::ENOSYS as u32,
            RET_KILL_PROCESS,
        ] {
            program.push(sock_filter {
                code: RET,
                jt: 0,
                jf: 0,
                k,
            });
        }
        Ok(SyscallFilter { program })
    }

    /// Installs the filter on the calling thread (sets no_new_privs first). Called between fork
    /// and exec.
    pub fn install(&self) -> std::io::Result<()> {
        seccompiler::apply_filter(&self.program).map_err(|_| std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// errno of each probe (0 for success), made in a forked child under the filter.
    fn probe(network: bool) -> Vec<i32> {
        let filter = SyscallFilter::new(network).unwrap();
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            let mut out: Vec<i32> = Vec::new();
            if filter.install().is_err() {
                unsafe { libc::_exit(9) };
            }
            unsafe {
                out.push(if libc::getpid() > 0 { 0 } else { errno() });
                let r = libc::mount(
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null(),
                );
                out.push(if r == 0 { 0 } else { errno() });
                let r = libc::unshare(libc::CLONE_NEWUSER);
                out.push(if r == 0 { 0 } else { errno() });
                let r = libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize);
                out.push(if r >= 0 { 0 } else { errno() });
                let flags = (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong;
                let r = libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize);
                if r == 0 {
                    libc::_exit(0);
                }
                out.push(if r > 0 { 0 } else { errno() });
                // A plain fork (clone without namespace flags) still works.
                let r = libc::syscall(
                    libc::SYS_clone,
                    libc::SIGCHLD as libc::c_ulong,
                    0usize,
                    0usize,
                    0usize,
                    0usize,
                );
                if r == 0 {
                    libc::_exit(0);
                }
                out.push(if r > 0 { 0 } else { errno() });
                let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                out.push(if s >= 0 { 0 } else { errno() });
                let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                out.push(if s >= 0 { 0 } else { errno() });
                // An x32 call (bit 30) of getpid: refused whatever the kernel's x32 support.
                let r = libc::syscall(0x4000_0000 | libc::SYS_getpid);
                out.push(if r >= 0 { 0 } else { errno() });
                let bytes: Vec<u8> = out.iter().flat_map(|v| v.to_le_bytes()).collect();
                libc::write(fds[1], bytes.as_ptr().cast(), bytes.len());
                libc::_exit(0);
            }
        }
        unsafe { libc::close(fds[1]) };
        let mut buf = vec![0u8; 256];
        let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(n > 0, "the child reported nothing (status {status})");
        buf[..n as usize]
            .chunks(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn denied_calls_fail_and_others_work() {
        let (ok, perm, nosys) = (0, libc::EPERM, libc::ENOSYS);
        // getpid, mount, unshare(NEWUSER), clone3, clone(NEWUSER), clone, socket(INET),
        // socket(UNIX), x32 getpid
        assert_eq!(
            probe(false),
            [ok, perm, perm, nosys, perm, ok, perm, ok, perm]
        );
        assert_eq!(probe(true), [ok, perm, perm, nosys, perm, ok, ok, ok, perm]);
    }
}
