//! `kiln-runner fork-server`: builds the server's private root and execs the interpreter in it.

use std::ffi::{c_char, CString};
use std::io;
use std::os::fd::IntoRawFd;

use super::ServerSetup;

/// `kiln-runner fork-server`: reads a `ServerSetup` on stdin, enters a mount namespace laid out
/// like a pod's (the interpreter must resolve its paths as a program in a pod would) and execs
/// the interpreter with the listening socket on fd 3.
pub fn launch_server() -> i32 {
    let setup: ServerSetup = match kiln_wire::frame::read_frame(&mut io::stdin().lock()) {
        Ok(Some(s)) => s,
        Ok(None) => return 0,
        Err(e) => {
            eprintln!("kiln-runner fork-server: reading the setup: {e}");
            return 2;
        }
    };
    // Opened before the host's filesystem goes away (the library may live under /tmp, where
    // the pod's root is staged).
    let library = match std::fs::File::open(&setup.library) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "kiln-runner fork-server: opening {}: {e}",
                setup.library.display()
            );
            return 2;
        }
    };
    if unsafe { libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS) } != 0 {
        eprintln!(
            "kiln-runner fork-server: unshare: {}",
            io::Error::last_os_error()
        );
        return 2;
    }
    if let Err(e) = kiln_sandbox::setup::enter_pod(&setup.pod) {
        eprintln!("kiln-runner fork-server: {e}");
        return 2;
    }
    // The user site of the program's own environment (HOME, as a run in a pod has it), made in
    // the server's private root: `site` finds it there and nowhere else, and the environment
    // stays exactly the program's.
    let Some(home) = setup.command.env.iter().find(|(k, _)| k == "HOME") else {
        eprintln!("kiln-runner fork-server: the language's environment has no HOME");
        return 2;
    };
    let site = std::path::Path::new(&home.1)
        .join(".local/lib")
        .join(format!("python{}", setup.python_version))
        .join("site-packages");
    if let Err(e) = lay_out_user_site(&site, library) {
        eprintln!("kiln-runner fork-server: preparing {}: {e}", site.display());
        return 2;
    }
    let cstrings = |v: Vec<String>| -> Result<Vec<CString>, std::ffi::NulError> {
        v.into_iter().map(CString::new).collect()
    };
    let env: Vec<String> = setup
        .command
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let (Ok(argv), Ok(env)) = (cstrings(setup.command.argv), cstrings(env)) else {
        eprintln!("kiln-runner fork-server: NUL byte in the command");
        return 2;
    };
    let Some(program) = argv.first() else {
        eprintln!("kiln-runner fork-server: empty command");
        return 2;
    };
    let mut argv_ptrs: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const c_char> = env.iter().map(|a| a.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    unsafe {
        // The interpreter starts as a program in a pod would: default signals, nothing blocked.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::execve(program.as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr());
    }
    eprintln!(
        "kiln-runner fork-server: exec {}: {}",
        program.to_string_lossy(),
        io::Error::last_os_error()
    );
    127
}

/// Writes usercustomize.py into the server's user site and links the library next to it,
/// through a descriptor the interpreter inherits (its file may be out of the root's sight).
fn lay_out_user_site(site: &std::path::Path, library: std::fs::File) -> io::Result<()> {
    std::fs::create_dir_all(site)?;
    std::fs::write(
        site.join("usercustomize.py"),
        include_str!("usercustomize.py"),
    )?;
    let fd = library.into_raw_fd();
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    std::os::unix::fs::symlink(format!("/proc/self/fd/{fd}"), site.join("_kiln_pyfork.so"))
}
