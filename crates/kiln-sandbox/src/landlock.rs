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

/// Landlock refused a ruleset Kiln asked for.
#[derive(Debug, thiserror::Error)]
#[error("landlock: {0}")]
pub struct LandlockError(#[from] landlock::RulesetError);

/// Confines the calling thread (between fork and exec: the program inherits it).
pub fn confine(writable: &[&Path]) -> Result<Enforcement, LandlockError> {
    let abi = ABI::V6;
    let writable: Vec<&Path> = writable.iter().copied().filter(|p| p.exists()).collect();
    let status: RestrictionStatus = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.scope(Scope::from_all(abi)))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(["/"], AccessFs::from_read(abi))))
        .and_then(|r| r.add_rules(path_beneath_rules(writable, AccessFs::from_all(abi))))
        .and_then(|r| r.restrict_self())?;
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

/// What a kernel with landlock ABI `abi` leaves to Kiln's other layers, for the start-up report;
/// `None` when it enforces everything Kiln asks for (ABI 6 and later).
pub fn weaker(abi: i32) -> Option<String> {
    if abi >= 6 {
        return None;
    }
    if abi <= 0 {
        return Some(
            "WEAKER: this kernel has no landlock: writes outside the work dir are stopped by the \
             read-only mounts and the unprivileged uid alone"
                .into(),
        );
    }
    let missing: Vec<&str> = [
        (2, "moving files between folders (refer)"),
        (3, "truncating files"),
        (5, "device ioctls"),
        (6, "signals and abstract UNIX sockets outside the pod (pids and network namespaces keep them apart: each pod gets a network namespace of its own)"),
    ]
    .into_iter()
    .filter(|(since, _)| abi < *since)
    .map(|(_, what)| what)
    .collect();
    Some(format!(
        "WEAKER: landlock ABI {abi} (Kiln asks for 6): it does not govern {}",
        missing.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::weaker;

    #[test]
    fn an_older_landlock_abi_names_what_it_does_not_govern() {
        assert_eq!(weaker(6), None);
        let v2 = weaker(2).unwrap();
        assert!(
            v2.contains("ABI 2") && v2.contains("truncating") && v2.contains("signals"),
            "{v2}"
        );
        assert!(!v2.contains("refer"), "{v2}");
        assert!(weaker(0).unwrap().contains("no landlock"));
    }
}
