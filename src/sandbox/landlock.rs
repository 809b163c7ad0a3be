//! Landlock, the unprivileged filesystem layer: the program may read and execute anything it can
//! see, and write only below its work dir, /tmp and /dev. It also may not signal processes or
//! reach abstract UNIX sockets outside its own domain (the runner, other jobs). Works without root
//! and inside Kubernetes pods; on kernels without landlock (or older ABIs) it does what the kernel
//! supports and reports it.

use std::path::Path;

use landlock::{
    path_beneath_rules, Access, AccessFs, RestrictionStatus, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

/// How much of the ruleset the kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    Full,
    Partial,
    None,
}

/// Confines the calling thread (between fork and exec: the program inherits it).
pub fn confine(writable: &[&Path]) -> Result<Enforcement, String> {
    let abi = ABI::V6;
    let writable: Vec<&Path> = writable.iter().copied().filter(|p| p.exists()).collect();
    let status: RestrictionStatus = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.scope(Scope::from_all(abi)))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(["/"], AccessFs::from_read(abi))))
        .and_then(|r| r.add_rules(path_beneath_rules(writable, AccessFs::from_all(abi))))
        .and_then(|r| r.restrict_self())
        .map_err(|e| format!("landlock: {e}"))?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Enforcement::Full,
        RulesetStatus::PartiallyEnforced => Enforcement::Partial,
        RulesetStatus::NotEnforced => Enforcement::None,
    })
}

/// The landlock ABI this kernel offers (0 when it has none).
pub fn abi_version() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    v.max(0) as i32
}
