//! Turns a freshly cloned process (new pid, mount, net, ipc and uts namespaces) into a standby
//! pod: a private tmpfs root holding read-only views of the toolchains, an /etc of its own
//! (etc.rs), a writable work dir and /tmp, a fresh /proc and a minimal /dev. Nothing else of the
//! host is reachable afterwards.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

pub use kiln_wire::setup::{PodSetup, WORK_DIR};

/// A failed step of pod creation, named so the operator knows what to fix.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {error}")]
pub struct SetupError {
    pub step: String,
    pub error: String,
}

fn step<T, E: std::fmt::Display>(
    name: impl Into<String>,
    r: Result<T, E>,
) -> Result<T, SetupError> {
    r.map_err(|e| SetupError {
        step: name.into(),
        error: e.to_string(),
    })
}

/// Builds the pod's filesystem and switches into it. Runs as pid 1 of the pod's namespaces.
pub fn enter_pod(setup: &PodSetup) -> Result<(), SetupError> {
    step(
        "make mounts private",
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        ),
    )?;
    // Warm caches are opened before anything is mounted over the host's view (they may live
    // under /tmp, the staging point) and reached later through /proc/self/fd.
    let lowers = setup
        .overlays
        .iter()
        .map(|(lower, _)| step(format!("open {}", lower.display()), fs::File::open(lower)))
        .collect::<Result<Vec<_>, _>>()?;
    // The staging point is only ever mounted over inside this pod's own mount namespace.
    let root = Path::new("/tmp");
    let size = format!("size={},mode=755", setup.tmpfs_bytes);
    step(
        "mount the pod's tmpfs root",
        mount(
            Some("kiln"),
            root,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(size.as_str()),
        ),
    )?;

    // The pod's own /etc first: what the host's holds is bound in only entry by entry.
    let etc = root.join("etc");
    step("create /etc", fs::create_dir_all(&etc))?;
    for (name, content) in super::etc::synthesized_files(setup.sandbox_user, &setup.hostname) {
        step(
            format!("write /etc/{name}"),
            fs::write(etc.join(name), content),
        )?;
    }
    for host in &setup.read_only {
        bind_read_only(root, host)?;
    }
    make_dev(root)?;
    // Hidden files are replaced by an empty file nobody may open.
    let blank = root.join(".masked");
    step("create the mask file", fs::write(&blank, b""))?;
    step(
        "chmod the mask file",
        fs::set_permissions(&blank, fs::Permissions::from_mode(0o000)),
    )?;
    for hidden in &setup.masked {
        let inside = inside(root, hidden);
        let what = format!("mask {}", hidden.display());
        if inside.is_dir() {
            let flags =
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            step(
                what,
                mount(
                    Some("kiln-masked"),
                    &inside,
                    Some("tmpfs"),
                    flags,
                    Some("size=4k,mode=755"),
                ),
            )?;
        } else if inside.exists() {
            bind(what, &blank, &inside, MsFlags::empty())?;
        }
    }

    let proc_dir = root.join("proc");
    step("create /proc", fs::create_dir_all(&proc_dir))?;
    step(
        "mount /proc",
        mount(
            Some("proc"),
            &proc_dir,
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        ),
    )?;

    let tmp = root.join("tmp");
    step("create /tmp", fs::create_dir_all(&tmp))?;
    step(
        "chmod /tmp",
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)),
    )?;
    for (i, ((lower, target), handle)) in setup.overlays.iter().zip(&lowers).enumerate() {
        use std::os::fd::AsRawFd;
        let via = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
        overlay(root, i, &via, target, setup.sandbox_user).map_err(|e| SetupError {
            step: format!("overlay {} on {}", lower.display(), target.display()),
            error: e.error,
        })?;
    }
    drop(lowers);
    let work = inside(root, Path::new(WORK_DIR));
    step("create the work dir", fs::create_dir_all(&work))?;
    if let Some((uid, gid)) = setup.sandbox_user {
        step(
            "chown the work dir",
            nix::unistd::chown(&work, Some(uid.into()), Some(gid.into())),
        )?;
    }

    step(
        "set the hostname",
        nix::unistd::sethostname(&setup.hostname),
    )?;

    let old = root.join(".old-root");
    step("create the old-root mount point", fs::create_dir_all(&old))?;
    step("pivot_root", nix::unistd::pivot_root(root, &old))?;
    step("chdir to the new root", std::env::set_current_dir("/"))?;
    step(
        "detach the host's filesystem",
        umount2("/.old-root", MntFlags::MNT_DETACH),
    )?;
    step(
        "remove the old-root mount point",
        fs::remove_dir("/.old-root"),
    )?;
    step("chdir to the work dir", std::env::set_current_dir(WORK_DIR))?;
    Ok(())
}

fn inside(root: &Path, host: &Path) -> PathBuf {
    root.join(host.strip_prefix("/").unwrap_or(host))
}

fn bind_read_only(root: &Path, host: &Path) -> Result<(), SetupError> {
    let meta = match fs::symlink_metadata(host) {
        Ok(m) => m,
        Err(_) => return Ok(()), // an optional path this host does not have (e.g. /lib32)
    };
    let target = inside(root, host);
    if let Some(parent) = target.parent() {
        step(
            format!("create {}", parent.display()),
            fs::create_dir_all(parent),
        )?;
    }
    if meta.file_type().is_symlink() {
        // Merged-/usr hosts have /bin -> usr/bin: keep the link, its target is bound separately.
        let link = step(format!("read link {}", host.display()), fs::read_link(host))?;
        if fs::symlink_metadata(&target).is_err() {
            step(format!("link {}", host.display()), symlink(link, &target))?;
        }
        return Ok(());
    }
    if meta.is_dir() {
        step(
            format!("create {}", target.display()),
            fs::create_dir_all(&target),
        )?;
    } else {
        step(
            format!("create {}", target.display()),
            fs::write(&target, b""),
        )?;
    }
    let what = format!("bind {} read-only", host.display());
    bind(what.clone(), host, &target, MsFlags::MS_REC)?;
    step(
        what,
        mount(
            None::<&str>,
            &target,
            None::<&str>,
            MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV,
            None::<&str>,
        ),
    )
}

/// A host cache under a private writable layer: reads come from the host directory, writes stay
/// in this pod's tmpfs (below /.kiln, which only root may enter).
fn overlay(
    root: &Path,
    i: usize,
    lower: &Path,
    target: &Path,
    owner: Option<(u32, u32)>,
) -> Result<(), SetupError> {
    let what = format!("overlay {} on {}", lower.display(), target.display());
    let private = root.join(".kiln");
    step("create /.kiln", fs::create_dir_all(&private))?;
    step(
        "chmod /.kiln",
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)),
    )?;
    let (upper, work) = (
        private.join(format!("upper{i}")),
        private.join(format!("work{i}")),
    );
    let mountpoint = inside(root, target);
    for dir in [&upper, &work, &mountpoint] {
        step(what.clone(), fs::create_dir_all(dir))?;
    }
    if let Some((uid, gid)) = owner {
        step(
            what.clone(),
            nix::unistd::chown(&upper, Some(uid.into()), Some(gid.into())),
        )?;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    step(
        what,
        mount(
            Some("overlay"),
            &mountpoint,
            Some("overlay"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        ),
    )
}

/// Bind-mounts `source` on `target` (plus `flags`), as step `what`.
fn bind(what: String, source: &Path, target: &Path, flags: MsFlags) -> Result<(), SetupError> {
    step(
        what,
        mount(
            Some(source),
            target,
            None::<&str>,
            MsFlags::MS_BIND | flags,
            None::<&str>,
        ),
    )
}

fn make_dev(root: &Path) -> Result<(), SetupError> {
    let dev = root.join("dev");
    step("create /dev", fs::create_dir_all(&dev))?;
    for name in ["null", "zero", "full", "random", "urandom"] {
        let target = dev.join(name);
        step(format!("create /dev/{name}"), fs::write(&target, b""))?;
        let host = format!("/dev/{name}");
        bind(
            format!("bind /dev/{name}"),
            Path::new(&host),
            &target,
            MsFlags::empty(),
        )?;
    }
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        step(format!("link /dev/{name}"), symlink(to, dev.join(name)))?;
    }
    let shm = dev.join("shm");
    step("create /dev/shm", fs::create_dir_all(&shm))?;
    step(
        "chmod /dev/shm",
        fs::set_permissions(&shm, fs::Permissions::from_mode(0o1777)),
    )?;
    Ok(())
}

/// Turns a path into a C string for syscalls made where allocation is not allowed later.
pub fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}
