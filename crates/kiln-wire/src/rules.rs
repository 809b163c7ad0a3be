//! The rules both sides apply to what a job names: its files' names and the signals a program
//! is sent or ended by.

use std::path::{Component, Path};

/// Checks a submitted file name: relative, no `..`, no empty parts, 1 to 255 bytes.
pub fn check_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err(format!("file name {name:?} must be 1 to 255 bytes"));
    }
    if !Path::new(name)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(format!(
            "file name {name:?} must be a relative path without '..'"
        ));
    }
    Ok(())
}

/// The name results give a signal a program ended by.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGFPE => "SIGFPE",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGINT => "SIGINT",
        libc::SIGTRAP => "SIGTRAP",
        _ => "other",
    }
}

/// The signals a client may send a running program by name (with or without `SIG`).
pub fn signal_by_name(name: &str) -> Option<i32> {
    let name = name.strip_prefix("SIG").unwrap_or(name);
    Some(match name {
        "KILL" => libc::SIGKILL,
        "TERM" => libc::SIGTERM,
        "INT" => libc::SIGINT,
        "HUP" => libc::SIGHUP,
        "QUIT" => libc::SIGQUIT,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        "ALRM" => libc::SIGALRM,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_stay_inside_the_work_dir() {
        assert!(check_file_name("main.py").is_ok());
        assert!(check_file_name("src/lib/util.c").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../b", "./a"] {
            assert!(check_file_name(bad).is_err(), "{bad:?} was allowed");
        }
        assert!(check_file_name(&"a".repeat(256)).is_err());
    }

    #[test]
    fn signals_are_named_both_ways() {
        assert_eq!(signal_name(libc::SIGSEGV), "SIGSEGV");
        assert_eq!(signal_name(63), "other");
        assert_eq!(signal_by_name("SIGKILL"), Some(libc::SIGKILL));
        assert_eq!(signal_by_name("TERM"), Some(libc::SIGTERM));
        assert_eq!(signal_by_name("SIGSEGV"), None);
    }
}
