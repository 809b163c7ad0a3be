//! Control groups, v1 and v2. The host side makes one cgroup per standby pod; the runner inside the
//! pod holds directory handles to it (opened before `pivot_root` hides the cgroup filesystem) to
//! set the job's limits, move the program in, and read what it used.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Which cgroup hierarchy this host offers for sandboxes, found once at start.
#[derive(Clone, Debug)]
pub enum CgroupLayout {
    /// Separate hierarchies per controller (many hosts still run these).
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpuacct: PathBuf,
        /// The `cpu` controller (CFS quotas), when mounted; often the same hierarchy as cpuacct.
        cpu: Option<PathBuf>,
        /// The `cpuset` controller, when mounted: running jobs are pinned to cores of their own.
        cpuset: Option<PathBuf>,
    },
    /// The unified hierarchy with memory, pids and cpu enabled below `root`.
    V2 { root: PathBuf },
    /// No usable cgroups; limits fall back to rlimits. The reason says what is missing.
    Unavailable { reason: String },
}

/// The directories of one pod's cgroup, as handed to the runner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupPaths {
    pub version: u8,
    /// v1: memory, pids, cpuacct, then cpu when it is a hierarchy of its own, then cpuset (in
    /// that order); v2: the one directory.
    pub dirs: Vec<PathBuf>,
    /// Where the cores the pod may run on are written (`cpuset.cpus`), when this host has the
    /// cpuset controller. The host writes it when a job starts; the runner never does.
    #[serde(default)]
    pub cpuset: Option<PathBuf>,
}

const KILN_GROUP: &str = "kiln";

/// The CFS period quotas are expressed in. Shorter than the kernel's 100 ms default so that a
/// group that spends its quota early in a period (many processes on many cores) is held back in
/// short slices, not for most of a period.
const CPU_PERIOD_US: u64 = 100_000;

impl CgroupLayout {
    /// Looks at the mounted cgroup filesystems and picks the one that can enforce memory and
    /// process limits. Prefers v2 when it has the controllers; v1 otherwise.
    pub fn detect() -> CgroupLayout {
        match fs::read_to_string("/proc/self/mounts") {
            Ok(mounts) => CgroupLayout::from_mounts(&mounts, &|root| {
                fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default()
            }),
            Err(e) => CgroupLayout::Unavailable {
                reason: format!("cannot read /proc/self/mounts: {e}"),
            },
        }
    }

    /// The choice `detect` makes, from the text of /proc/self/mounts and a reader of a cgroup2
    /// root's `cgroup.controllers`.
    pub fn from_mounts(mounts: &str, controllers_of: &dyn Fn(&Path) -> String) -> CgroupLayout {
        let mut v1_memory = None;
        let mut v1_pids = None;
        let mut v1_cpuacct = None;
        let mut v1_cpu = None;
        let mut v1_cpuset = None;
        let mut v2_root = None;
        for line in mounts.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 4 {
                continue;
            }
            let (dir, fstype, opts) = (PathBuf::from(fields[1]), fields[2], fields[3]);
            if fstype == "cgroup2" {
                v2_root.get_or_insert(dir);
            } else if fstype == "cgroup" {
                for opt in opts.split(',') {
                    match opt {
                        "memory" => v1_memory = Some(dir.clone()),
                        "pids" => v1_pids = Some(dir.clone()),
                        "cpuacct" => v1_cpuacct = Some(dir.clone()),
                        "cpu" => v1_cpu = Some(dir.clone()),
                        "cpuset" => v1_cpuset = Some(dir.clone()),
                        _ => {}
                    }
                }
            }
        }
        let mut missing_v2 = String::from("no cgroup2 filesystem is mounted");
        if let Some(root) = &v2_root {
            let controllers = controllers_of(root);
            let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
            if has("memory") && has("pids") && has("cpu") {
                return CgroupLayout::V2 { root: root.clone() };
            }
            missing_v2 = format!(
                "cgroup2 at {} offers controllers [{}], not memory+pids+cpu",
                root.display(),
                controllers.trim()
            );
        }
        match (v1_memory, v1_pids, v1_cpuacct) {
            (Some(memory), Some(pids), Some(cpuacct)) => CgroupLayout::V1 {
                memory,
                pids,
                cpuacct,
                cpu: v1_cpu,
                cpuset: v1_cpuset,
            },
            (m, p, c) => {
                let mut absent = Vec::new();
                if m.is_none() {
                    absent.push("memory");
                }
                if p.is_none() {
                    absent.push("pids");
                }
                if c.is_none() {
                    absent.push("cpuacct");
                }
                CgroupLayout::Unavailable {
                    reason: format!(
                        "{missing_v2}; cgroup v1 lacks the {} controller(s)",
                        absent.join(", ")
                    ),
                }
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            CgroupLayout::V1 {
                memory,
                cpu,
                cpuset,
                ..
            } => format!(
                "cgroup v1 (memory at {}; {}; {})",
                memory.display(),
                if cpu.is_some() {
                    "CPU quota per pod"
                } else {
                    "NO CPU QUOTA: the cpu controller is not mounted"
                },
                if cpuset.is_some() {
                    "running jobs pinned to cores of their own"
                } else {
                    "no cpuset controller: jobs share cores, neighbours can slow each other"
                }
            ),
            CgroupLayout::V2 { root } => format!(
                "cgroup v2 at {}; CPU quota per pod; {}",
                root.display(),
                if root.join(KILN_GROUP).join("cpuset.cpus").exists() {
                    "running jobs pinned to cores of their own"
                } else {
                    "cpuset not delegated: jobs share cores, neighbours can slow each other"
                }
            ),
            CgroupLayout::Unavailable { reason } => format!("no cgroups ({reason})"),
        }
    }

    /// Makes the parent `kiln` group (and on v2 enables the controllers for its children).
    pub fn prepare(&self) -> io::Result<()> {
        match self {
            CgroupLayout::V1 { memory, cpuset, .. } => {
                for group in self.kiln_groups().map(|(_, g)| g).unwrap_or_default() {
                    mkdir_if_missing(&group)?;
                }
                // Swap would let a memory bomb outlive its limit slowly instead of being killed.
                let _ = fs::write(memory.join(KILN_GROUP).join("memory.swappiness"), "0");
                if let Some(root) = cpuset {
                    // A v1 cpuset group starts with no cores and no memory nodes: nothing could
                    // join it. Kiln's group takes the host's; pod groups copy Kiln's at mkdir.
                    let kiln = root.join(KILN_GROUP);
                    for file in ["cpuset.cpus", "cpuset.mems"] {
                        let value = fs::read_to_string(root.join(file))?;
                        write_file(&kiln.join(file), value.trim())?;
                    }
                    write_file(&kiln.join("cgroup.clone_children"), "1")?;
                }
                Ok(())
            }
            CgroupLayout::V2 { root } => {
                let enable = "+memory +pids +cpu";
                fs::write(root.join("cgroup.subtree_control"), enable).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "enabling {enable} in {}/cgroup.subtree_control: {e}",
                            root.display()
                        ),
                    )
                })?;
                let kiln = root.join(KILN_GROUP);
                mkdir_if_missing(&kiln)?;
                fs::write(kiln.join("cgroup.subtree_control"), enable)?;
                // Pinning jobs to cores needs cpuset too; a host that does not delegate it still
                // runs jobs, on shared cores (the start-up report says so).
                if fs::write(root.join("cgroup.subtree_control"), "+cpuset").is_ok() {
                    let _ = fs::write(kiln.join("cgroup.subtree_control"), "+cpuset");
                }
                Ok(())
            }
            CgroupLayout::Unavailable { .. } => Ok(()),
        }
    }

    /// The version and Kiln's parent group in each hierarchy (v1: memory, pids, cpuacct, and
    /// cpu when it is not mounted with cpuacct).
    fn kiln_groups(&self) -> Option<(u8, Vec<PathBuf>)> {
        match self {
            CgroupLayout::V1 {
                memory,
                pids,
                cpuacct,
                cpu,
                cpuset,
            } => Some((
                1,
                [memory, pids, cpuacct]
                    .into_iter()
                    .chain(cpu.as_ref().filter(|c| *c != cpuacct))
                    .chain(cpuset.as_ref())
                    .map(|b| b.join(KILN_GROUP))
                    .collect(),
            )),
            CgroupLayout::V2 { root } => Some((2, vec![root.join(KILN_GROUP)])),
            CgroupLayout::Unavailable { .. } => None,
        }
    }

    /// Creates the cgroup of one pod.
    pub fn create_pod_group(&self, name: &str) -> io::Result<Option<CgroupPaths>> {
        let Some((version, bases)) = self.kiln_groups() else {
            return Ok(None);
        };
        let dirs: Vec<PathBuf> = bases.iter().map(|b| b.join(name)).collect();
        for dir in &dirs {
            fs::create_dir(dir).map_err(|e| {
                io::Error::new(e.kind(), format!("creating cgroup {}: {e}", dir.display()))
            })?;
        }
        let cpuset = dirs
            .iter()
            .rev()
            .find(|d| d.join("cpuset.cpus").exists())
            .cloned();
        Ok(Some(CgroupPaths {
            version,
            dirs,
            cpuset,
        }))
    }

    /// The cores pods may be pinned to (Kiln's cpuset group's), when this host has cpuset.
    pub fn pinnable_cores(&self) -> Option<Vec<u32>> {
        let dir = match self {
            CgroupLayout::V1 {
                cpuset: Some(root), ..
            } => root.join(KILN_GROUP),
            CgroupLayout::V2 { root } => root.join(KILN_GROUP),
            _ => return None,
        };
        [
            "cpuset.cpus.effective",
            "cpuset.effective_cpus",
            "cpuset.cpus",
        ]
        .iter()
        .filter_map(|f| fs::read_to_string(dir.join(f)).ok())
        .find_map(|text| parse_cpu_list(text.trim()))
    }

    /// Lists pod groups left behind by Kiln processes that are gone (a crash), so start-up can
    /// remove them. Pod groups are named `pod-<pid of the owner>-<n>`; live owners keep theirs.
    pub fn leftover_pod_groups(&self) -> Vec<CgroupPaths> {
        let Some((version, bases)) = self.kiln_groups() else {
            return Vec::new();
        };
        let Ok(entries) = fs::read_dir(&bases[0]) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let owner = name
                    .strip_prefix("pod-")
                    .and_then(|r| r.split('-').next())
                    .and_then(|p| p.parse::<u32>().ok());
                owner.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
            })
            .map(|e| CgroupPaths {
                version,
                dirs: bases.iter().map(|b| b.join(e.file_name())).collect(),
                cpuset: None,
            })
            .collect()
    }
}

impl CgroupPaths {
    /// Pins the pod to `cores` (the processes already inside move with it).
    pub fn pin(&self, cores: &[u32]) -> io::Result<()> {
        let Some(dir) = &self.cpuset else {
            return Ok(());
        };
        let list: Vec<String> = cores.iter().map(u32::to_string).collect();
        write_file(&dir.join("cpuset.cpus"), &list.join(","))
    }

    /// Kills whatever is still in the group and removes its directories. Retries briefly because
    /// processes killed an instant ago may still be leaving.
    pub fn remove(&self) -> io::Result<()> {
        for attempt in 0..200 {
            let mut busy = false;
            for dir in &self.dirs {
                if !dir.exists() {
                    continue;
                }
                if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
                    for pid in procs
                        .split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok())
                    {
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
                match fs::remove_dir(dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) if attempt == 199 => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("removing cgroup {}: {e}", dir.display()),
                        ))
                    }
                    Err(_) => busy = true,
                }
            }
            if !busy {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Ok(())
    }
}

/// `0-3,8,10-11` -> [0, 1, 2, 3, 8, 10, 11]; `None` when empty or malformed.
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cores = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cores.extend(a.parse::<u32>().ok()?..=b.parse::<u32>().ok()?),
            None => cores.push(part.parse().ok()?),
        }
    }
    (!cores.is_empty()).then_some(cores)
}

fn write_file(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("writing {value} to {}: {e}", path.display()),
        )
    })
}

fn mkdir_if_missing(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(io::Error::new(
            e.kind(),
            format!("creating cgroup {}: {e}", dir.display()),
        )),
        _ => Ok(()),
    }
}

/// A pod's cgroup as seen by the runner: directory handles that stay valid after the cgroup
/// filesystem is hidden from the sandbox.
pub struct Cgroup {
    version: u8,
    dirs: Vec<OwnedFd>,
    /// `cgroup.procs` of every hierarchy, open for writing, so the program's process can move
    /// itself in between fork and exec without allocating.
    procs: Vec<OwnedFd>,
    /// v2 `memory.peak`, kept open: a write resets the peak seen through this handle.
    peak: Option<OwnedFd>,
    /// Which of `dirs` takes CPU quotas: v1's cpu hierarchy (which may be cpuacct's); `None` on
    /// a v1 host without the cpu controller.
    cpu_quota: Option<usize>,
}

/// Moves the calling process into the group whose `cgroup.procs` handles these are.
pub fn enter(procs: &[OwnedFd]) -> io::Result<()> {
    for fd in procs {
        if unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) } != 1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Cgroup {
    pub fn open(paths: &CgroupPaths) -> io::Result<Cgroup> {
        let mut dirs = Vec::new();
        let mut procs = Vec::new();
        for dir in &paths.dirs {
            let fd = open_path(dir, libc::O_RDONLY | libc::O_DIRECTORY)?;
            procs.push(open_at(&fd, "cgroup.procs", libc::O_WRONLY)?);
            dirs.push(fd);
        }
        let peak = if paths.version == 2 {
            open_at(&dirs[0], "memory.peak", libc::O_RDWR).ok()
        } else {
            None
        };
        let cpu_quota = if paths.version == 2 {
            Some(0)
        } else {
            (2..dirs.len()).find(|&i| open_at(&dirs[i], "cpu.cfs_quota_us", libc::O_RDONLY).is_ok())
        };
        Ok(Cgroup {
            version: paths.version,
            dirs,
            procs,
            peak,
            cpu_quota,
        })
    }

    fn memory(&self) -> &OwnedFd {
        &self.dirs[0]
    }

    fn pids(&self) -> &OwnedFd {
        if self.version == 1 {
            &self.dirs[1]
        } else {
            &self.dirs[0]
        }
    }

    fn cpu(&self) -> &OwnedFd {
        if self.version == 1 {
            &self.dirs[2]
        } else {
            &self.dirs[0]
        }
    }

    /// Caps the group at `cpus` cores' worth of time in every scheduling period, so that a
    /// program with many busy processes takes no more than its share from its neighbours.
    fn apply_cpu_quota(&self, cpus: u32) -> io::Result<()> {
        let Some(dir) = self.cpu_quota.map(|i| &self.dirs[i]) else {
            return Ok(()); // a v1 host without the cpu controller (the start-up report says so)
        };
        let quota = u64::from(cpus.max(1)) * CPU_PERIOD_US;
        if self.version == 1 {
            write_at(dir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
            write_at(dir, "cpu.cfs_quota_us", &quota.to_string())
        } else {
            write_at(dir, "cpu.max", &format!("{quota} {CPU_PERIOD_US}"))
        }
    }

    /// Applies one stage's limits and resets the peak-memory counter.
    pub fn apply(&self, memory_bytes: u64, processes: u32, cpus: u32) -> io::Result<()> {
        if self.version == 1 {
            // memsw must stay >= the memory limit: lower the memory limit first when shrinking.
            let _ = write_at(self.memory(), "memory.memsw.limit_in_bytes", "-1");
            write_at(
                self.memory(),
                "memory.limit_in_bytes",
                &memory_bytes.to_string(),
            )?;
            let _ = write_at(
                self.memory(),
                "memory.memsw.limit_in_bytes",
                &memory_bytes.to_string(),
            );
            let _ = write_at(self.memory(), "memory.max_usage_in_bytes", "0");
        } else {
            write_at(self.memory(), "memory.max", &memory_bytes.to_string())?;
            let _ = write_at(self.memory(), "memory.swap.max", "0");
            if let Some(peak) = &self.peak {
                let _ = write_fd(peak, "reset");
            }
        }
        write_at(self.pids(), "pids.max", &processes.to_string())?;
        self.apply_cpu_quota(cpus)
    }

    /// Moves the calling process into this cgroup. Called between fork and exec: no allocation.
    /// The `cgroup.procs` handles, for `enter` (or to hand to a process that is not the
    /// runner's child: a fork server's).
    pub fn procs(&self) -> &[OwnedFd] {
        &self.procs
    }

    /// Peak memory of the group since the last `apply`, in bytes.
    pub fn memory_peak(&self) -> u64 {
        if self.version == 1 {
            read_u64_at(self.memory(), "memory.max_usage_in_bytes").unwrap_or(0)
        } else if let Some(Ok(peak)) = self.peak.as_ref().map(|p| p.try_clone()) {
            let mut text = String::new();
            let mut file = fs::File::from(peak);
            use std::io::Seek;
            let _ = file.seek(io::SeekFrom::Start(0));
            let _ = file.read_to_string(&mut text);
            text.trim().parse().unwrap_or(0)
        } else {
            read_u64_at(self.memory(), "memory.current").unwrap_or(0)
        }
    }

    /// How many times the kernel's OOM killer has killed a process in this group.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.version == 1 {
            "memory.oom_control"
        } else {
            "memory.events"
        };
        let text = read_at(self.memory(), file).unwrap_or_default();
        text.lines()
            .find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// CPU time used by the group so far, in nanoseconds.
    pub fn cpu_usage_ns(&self) -> u64 {
        if self.version == 1 {
            read_u64_at(self.cpu(), "cpuacct.usage").unwrap_or(0)
        } else {
            let text = read_at(self.cpu(), "cpu.stat").unwrap_or_default();
            text.lines()
                .find_map(|l| {
                    l.strip_prefix("usage_usec ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                })
                .map(|us| us * 1000)
                .unwrap_or(0)
        }
    }

    /// How many tasks the group holds, zombies not yet reaped included (`pids.current`).
    pub fn tasks(&self) -> Option<u64> {
        read_u64_at(self.pids(), "pids.current").ok()
    }

    /// Pids of the processes in the group (v1: from the memory hierarchy).
    pub fn pids_inside(&self) -> Vec<i32> {
        read_at(self.memory(), "cgroup.procs")
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Kills every process in the group.
    pub fn kill_all(&self) {
        if self.version == 2 && write_at(self.memory(), "cgroup.kill", "1").is_ok() {
            return;
        }
        for _ in 0..100 {
            let pids = self.pids_inside();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

fn open_path(path: &Path, flags: i32) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::ErrorKind::InvalidInput)?;
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("opening {}: {e}", path.display()),
        ));
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_at(dir: &OwnedFd, name: &str, flags: i32) -> io::Result<OwnedFd> {
    let c = CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("opening cgroup file {name}: {e}"),
        ));
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn write_fd(fd: &OwnedFd, value: &str) -> io::Result<()> {
    let mut file = fs::File::from(fd.try_clone()?);
    file.write_all(value.as_bytes())
}

fn write_at(dir: &OwnedFd, name: &str, value: &str) -> io::Result<()> {
    let fd = open_at(dir, name, libc::O_WRONLY)?;
    write_fd(&fd, value).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("writing {value} to cgroup file {name}: {e}"),
        )
    })
}

fn read_at(dir: &OwnedFd, name: &str) -> io::Result<String> {
    let mut text = String::new();
    fs::File::from(open_at(dir, name, libc::O_RDONLY)?).read_to_string(&mut text)?;
    Ok(text)
}

fn read_u64_at(dir: &OwnedFd, name: &str) -> io::Result<u64> {
    read_at(dir, name)?
        .trim()
        .parse()
        .map_err(|_| io::ErrorKind::InvalidData.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_HOST: &str = "tmpfs /sys/fs/cgroup tmpfs rw 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";
    const V2_HOST: &str = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n";

    #[test]
    fn a_v1_host_with_an_empty_unified_hierarchy_uses_v1() {
        let layout = CgroupLayout::from_mounts(V1_HOST, &|_| String::new());
        match layout {
            CgroupLayout::V1 {
                memory,
                pids,
                cpuacct,
                cpu,
                cpuset,
            } => {
                assert_eq!(
                    (cpu, cpuset),
                    (None, None),
                    "no cpu or cpuset controller mounted"
                );
                assert_eq!(memory, Path::new("/sys/fs/cgroup/memory"));
                assert_eq!(pids, Path::new("/sys/fs/cgroup/pids"));
                assert_eq!(cpuacct, Path::new("/sys/fs/cgroup/cpuacct"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_v1_cpu_controller_is_found_apart_from_or_with_cpuacct() {
        let apart = format!("{V1_HOST}cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n");
        let layout = CgroupLayout::from_mounts(&apart, &|_| String::new());
        assert!(
            matches!(&layout, CgroupLayout::V1 { cpu: Some(c), .. } if c == Path::new("/sys/fs/cgroup/cpu")),
            "{layout:?}"
        );
        assert_eq!(layout.kiln_groups().unwrap().1.len(), 4);
        let together = V1_HOST.replace(
            "cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct",
            "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,relatime,cpu,cpuacct",
        );
        let layout = CgroupLayout::from_mounts(&together, &|_| String::new());
        let (_, groups) = layout.kiln_groups().unwrap();
        assert_eq!(
            groups.len(),
            3,
            "one directory serves cpu and cpuacct: {groups:?}"
        );
        assert_eq!(groups[2], Path::new("/sys/fs/cgroup/cpu,cpuacct/kiln"));
    }

    #[test]
    fn cpu_lists_are_read_as_the_kernel_writes_them() {
        assert_eq!(parse_cpu_list("0-1"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0-2,5,7-8"), Some(vec![0, 1, 2, 5, 7, 8]));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn a_pure_v2_host_uses_v2() {
        let layout = CgroupLayout::from_mounts(V2_HOST, &|_| {
            "cpuset cpu io memory hugetlb pids rdma misc".into()
        });
        assert!(matches!(layout, CgroupLayout::V2 { root } if root == Path::new("/sys/fs/cgroup")));
    }

    #[test]
    fn a_v2_host_without_the_memory_controller_says_what_is_missing() {
        let layout = CgroupLayout::from_mounts(V2_HOST, &|_| "cpu io pids".into());
        match layout {
            CgroupLayout::Unavailable { reason } => {
                assert!(reason.contains("not memory+pids+cpu"), "{reason}");
                assert!(reason.contains("memory, pids, cpuacct"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
