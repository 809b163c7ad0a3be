//! Figures of the host from /proc: busy CPU time, available memory, a process's resident set.

use std::time::Duration;

/// Busy CPU time of the whole host so far (from /proc/stat), kernel work included.
pub fn busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    busy_of(&stat)
}

fn busy_of(stat: &str) -> Duration {
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user, nice, system, irq, softirq: not idle or iowait, not steal (the hypervisor's), not
    // guest (counted in user already).
    let busy: u64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| cpu.get(i)).sum();
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(busy * 1000 / hz)
}

/// A `Name:   123 kB` field of a /proc file, in bytes (0 when absent).
pub fn kb_field(path: &str, name: &str) -> u64 {
    kb_field_of(&std::fs::read_to_string(path).unwrap_or_default(), name)
}

fn kb_field_of(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// MemAvailable of /proc/meminfo, in bytes.
pub fn mem_available() -> i64 {
    kb_field("/proc/meminfo", "MemAvailable:") as i64
}

/// A process's resident set size, in bytes (0 when it is gone).
pub fn rss_of(pid: u32) -> u64 {
    kb_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_time_counts_user_nice_system_irq_and_softirq_only() {
        // user nice system idle iowait irq softirq steal guest
        let stat = "cpu  100 20 30 5000 70 4 6 900 50\ncpu0 1 2 3\n";
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert_eq!(busy_of(stat), Duration::from_millis(160 * 1000 / hz));
    }

    #[test]
    fn a_kb_field_is_read_in_bytes_and_an_absent_one_is_zero() {
        let status = "Name:\tkiln\nVmRSS:\t   2048 kB\nThreads:\t4\n";
        assert_eq!(kb_field_of(status, "VmRSS:"), 2048 * 1024);
        assert_eq!(kb_field_of(status, "VmSwap:"), 0);
        assert!(rss_of(std::process::id()) > 0);
    }
}
