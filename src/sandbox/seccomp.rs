//! The system-call filter every program runs under: a deny list of calls no submission needs and
//! that would let it reach past its sandbox (namespaces, mounts, tracing, kernel modules, raw
//! network when networking is off). Denied calls fail with EPERM rather than killing the program,
//! so the program's own error handling reports them.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Compiled filters, built before fork so that installing them allocates nothing.
pub struct SyscallFilter {
    programs: Vec<BpfProgram>,
}

fn arch() -> TargetArch {
    if cfg!(target_arch = "aarch64") {
        TargetArch::aarch64
    } else if cfg!(target_arch = "riscv64") {
        TargetArch::riscv64
    } else {
        TargetArch::x86_64
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

impl SyscallFilter {
    pub fn new(network: bool) -> Result<SyscallFilter, String> {
        let err = |e: seccompiler::BackendError| e.to_string();
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
            DENIED.iter().map(|&n| (n, Vec::new())).collect();
        let flag_rules = NAMESPACE_FLAGS
            .iter()
            .map(|&f| {
                let cond = SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(f as u64),
                    f as u64,
                )
                .map_err(err)?;
                SeccompRule::new(vec![cond]).map_err(err)
            })
            .collect::<Result<Vec<_>, _>>()?;
        rules.insert(libc::SYS_clone, flag_rules);
        if !network {
            let families = [
                libc::AF_INET,
                libc::AF_INET6,
                libc::AF_PACKET,
                libc::AF_NETLINK,
            ];
            let socket_rules = families
                .iter()
                .map(|&af| {
                    let cond = SeccompCondition::new(
                        0,
                        SeccompCmpArgLen::Dword,
                        SeccompCmpOp::Eq,
                        af as u64,
                    )
                    .map_err(err)?;
                    SeccompRule::new(vec![cond]).map_err(err)
                })
                .collect::<Result<Vec<_>, _>>()?;
            rules.insert(libc::SYS_socket, socket_rules);
        }
        let deny = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            arch(),
        )
        .map_err(err)?;
        // clone3 passes its flags in memory, out of a filter's reach. ENOSYS makes the C library
        // fall back to clone, whose flags the filter above can see.
        let clone3 = SeccompFilter::new(
            [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch(),
        )
        .map_err(err)?;
        let programs = [deny, clone3]
            .into_iter()
            .map(|f| BpfProgram::try_from(f).map_err(err))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SyscallFilter { programs })
    }

    /// Installs the filters on the calling thread (sets no_new_privs first). Called between fork
    /// and exec.
    pub fn install(&self) -> std::io::Result<()> {
        for p in &self.programs {
            seccompiler::apply_filter(p).map_err(|_| std::io::Error::last_os_error())?;
        }
        Ok(())
    }
}
