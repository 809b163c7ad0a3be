//! Which cores a process may run on (`sched_getaffinity` / `sched_setaffinity`): how a running
//! job is kept on the cores it was given (`src/pods/cores.rs`).

use std::io;

const SIZE: usize = std::mem::size_of::<libc::cpu_set_t>();

/// The cores process `pid` (0: the caller) may run on.
pub fn of(pid: i32) -> io::Result<Vec<u32>> {
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if unsafe { libc::sched_getaffinity(pid, SIZE, &mut set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .map(|c| c as u32)
        .collect())
}

/// Lets process `pid` (0: the caller) run on `cores` only.
pub fn set(pid: i32, cores: &[u32]) -> io::Result<()> {
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cores {
        unsafe { libc::CPU_SET(c as usize, &mut set) };
    }
    if unsafe { libc::sched_setaffinity(pid, SIZE, &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_narrowed_to_one_of_its_cores_runs_on_that_one() {
        let mine = of(0).expect("own affinity");
        assert!(!mine.is_empty());
        // On a thread of its own: the test harness's threads keep theirs.
        let last = *mine.last().unwrap();
        let seen = std::thread::spawn(move || {
            set(0, &[last]).expect("narrowing is allowed");
            of(0).expect("read back")
        })
        .join()
        .unwrap();
        assert_eq!(seen, vec![last]);
    }
}
