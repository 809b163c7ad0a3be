//! Control groups, v1 and v2. The host side makes one cgroup per standby pod; the runner inside the
//! pod holds directory handles to it (opened before `pivot_root` hides the cgroup filesystem) to
//! set the job's limits, move the program in, and read what it used.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
    },
    /// The unified hierarchy with memory, pids and cpu enabled below `root`: the hierarchy's own
    /// root when Kiln runs as root, or, for an unprivileged Kiln, the subtree delegated to the
    /// group it was started in (a systemd user service with `Delegate=yes`), which Kiln leaves
    /// for a leaf of its own before handing controllers to the pods' groups.
    V2 { root: PathBuf, delegated: bool },
    /// No usable cgroups; limits fall back to rlimits. The reason says what is missing.
    Unavailable { reason: String },
}

pub use kiln_wire::setup::CgroupPaths;

const KILN_GROUP: &str = "kiln";

/// The leaf an unprivileged Kiln moves itself into within its delegated subtree: cgroup v2 lets
/// a group hand controllers to children only while it holds no process itself.
const SUPERVISOR_GROUP: &str = "supervisor";

/// The CFS period quotas are expressed in. Shorter than the kernel's 100 ms default so that a
/// group that spends its quota early in a period (many processes on many cores) is held back in
/// short slices, not for most of a period.
const CPU_PERIOD_US: u64 = 100_000;

impl CgroupLayout {
    /// Looks at the mounted cgroup filesystems and picks the one that can enforce memory and
    /// process limits. Prefers v2 when it has the controllers; v1 otherwise.
    pub fn detect() -> CgroupLayout {
        let controllers_of =
            |dir: &Path| fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        let layout = match fs::read_to_string("/proc/self/mounts") {
            Ok(mounts) => CgroupLayout::from_mounts(&mounts, &controllers_of),
            Err(e) => CgroupLayout::Unavailable {
                reason: format!("cannot read /proc/self/mounts: {e}"),
            },
        };
        match &layout {
            // Only root may make groups at the top; anyone else needs a delegated subtree.
            CgroupLayout::V2 { root, .. } if unsafe { libc::geteuid() } != 0 => {
                let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
                let writable = |p: &Path| {
                    CString::new(p.as_os_str().as_encoded_bytes())
                        .is_ok_and(|c| unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0)
                };
                CgroupLayout::delegated(root, &own, &controllers_of, &writable)
            }
            _ => layout,
        }
    }

    /// For an unprivileged process on the unified hierarchy mounted at `mount`: the subtree
    /// delegated to its own group (`own` is the text of /proc/self/cgroup), when it may manage
    /// that group and the group offers memory, pids and cpu.
    pub fn delegated(
        mount: &Path,
        own: &str,
        controllers_of: &dyn Fn(&Path) -> String,
        writable: &dyn Fn(&Path) -> bool,
    ) -> CgroupLayout {
        let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) else {
            return CgroupLayout::Unavailable {
                reason: "cgroup v2: /proc/self/cgroup names no group on the unified hierarchy"
                    .into(),
            };
        };
        let mut dir = mount.join(path.trim().trim_start_matches('/'));
        // A Kiln started again in the same process finds itself in its leaf already.
        if dir.file_name().is_some_and(|n| n == SUPERVISOR_GROUP) {
            if let Some(parent) = dir.parent().filter(|p| p.starts_with(mount) && *p != mount) {
                dir = parent.to_path_buf();
            }
        }
        let files = ["cgroup.procs", "cgroup.subtree_control"];
        if dir == mount || !writable(&dir) || !files.iter().all(|f| writable(&dir.join(f))) {
            return CgroupLayout::Unavailable {
                reason: format!(
                    "cgroup v2: this unprivileged process's group {} is not delegated to it \
                     (run Kiln as root, or as a systemd user service with Delegate=yes)",
                    dir.display()
                ),
            };
        }
        let controllers = controllers_of(&dir);
        let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
        if !(has("memory") && has("pids") && has("cpu")) {
            return CgroupLayout::Unavailable {
                reason: format!(
                    "cgroup v2: the delegated group {} offers controllers [{}], not \
                     memory+pids+cpu (delegate them: Delegate=memory pids cpu)",
                    dir.display(),
                    controllers.trim()
                ),
            };
        }
        CgroupLayout::V2 {
            root: dir,
            delegated: true,
        }
    }

    /// The choice `detect` makes, from the text of /proc/self/mounts and a reader of a cgroup2
    /// root's `cgroup.controllers`.
    pub fn from_mounts(mounts: &str, controllers_of: &dyn Fn(&Path) -> String) -> CgroupLayout {
        let mut v1_memory = None;
        let mut v1_pids = None;
        let mut v1_cpuacct = None;
        let mut v1_cpu = None;
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
                return CgroupLayout::V2 {
                    root: root.clone(),
                    delegated: false,
                };
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
            CgroupLayout::V1 { memory, cpu, .. } => format!(
                "cgroup v1 (memory at {}; {})",
                memory.display(),
                if cpu.is_some() {
                    "CPU quota per pod"
                } else {
                    "NO CPU QUOTA: the cpu controller is not mounted"
                },
            ),
            CgroupLayout::V2 { root, delegated } => {
                let controllers = fs::read_to_string(root.join("cgroup.controllers"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                format!(
                    "cgroup v2 at {}{} (controllers: {controllers}); CPU quota per pod",
                    root.display(),
                    if *delegated {
                        ", a subtree delegated to this user"
                    } else {
                        ""
                    },
                )
            }
            CgroupLayout::Unavailable { reason } => format!("no cgroups ({reason})"),
        }
    }

    /// Makes the parent `kiln` group (and on v2 enables the controllers for its children).
    pub fn prepare(&self) -> io::Result<()> {
        match self {
            CgroupLayout::V1 { memory, .. } => {
                for group in self.kiln_groups().map(|(_, g)| g).unwrap_or_default() {
                    mkdir_if_missing(&group)?;
                }
                // Swap would let a memory bomb outlive its limit slowly instead of being killed.
                let _ = fs::write(memory.join(KILN_GROUP).join("memory.swappiness"), "0");
                Ok(())
            }
            CgroupLayout::V2 { root, delegated } => {
                if *delegated {
                    leave_for_leaf(root)?;
                }
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
            } => Some((
                1,
                [memory, pids, cpuacct]
                    .into_iter()
                    .chain(cpu.as_ref().filter(|c| *c != cpuacct))
                    .map(|b| b.join(KILN_GROUP))
                    .collect(),
            )),
            CgroupLayout::V2 { root, .. } => Some((2, vec![root.join(KILN_GROUP)])),
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
        Ok(Some(CgroupPaths { version, dirs }))
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
            })
            .collect()
    }
}

/// What the host does with a pod's group once the pod is gone.
pub trait RemoveGroup {
    /// Kills whatever is still in the group and removes its directories. Retries briefly because
    /// processes killed an instant ago may still be leaving.
    fn remove(&self) -> io::Result<()>;
}

impl RemoveGroup for CgroupPaths {
    fn remove(&self) -> io::Result<()> {
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

/// Moves every process of the delegated group `root` (this one and any started with it) into
/// its leaf, so that `root` may hand controllers to the pods' parent group.
fn leave_for_leaf(root: &Path) -> io::Result<()> {
    let leaf = root.join(SUPERVISOR_GROUP);
    mkdir_if_missing(&leaf)?;
    let procs = fs::read_to_string(root.join("cgroup.procs"))?;
    for pid in procs.split_whitespace() {
        fs::write(leaf.join("cgroup.procs"), pid).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("moving process {pid} into {}: {e}", leaf.display()),
            )
        })?;
    }
    Ok(())
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
    /// Where `memory.peak` stood when the stage began, on kernels that cannot reset it (before
    /// 6.12): a peak above it is the stage's own; one at it may be an earlier stage's.
    peak_before: Mutex<Option<u64>>,
    /// Which of `dirs` takes CPU quotas: v1's cpu hierarchy (which may be cpuacct's); `None` on
    /// a v1 host without the cpu controller.
    cpu_quota: Option<usize>,
    /// The group's files, kept open after their first use: a job reads and writes a dozen of
    /// them per step, each then one system call instead of a path lookup, an open and a close.
    handles: Mutex<Vec<(usize, &'static str, i32, Arc<OwnedFd>)>>,
    /// The limits the last `apply` set (memory, processes, cpus); `None` before the first or
    /// after a failed one. Only what changes is written again.
    applied: Mutex<Option<(u64, u32, u32)>>,
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
            peak_before: Mutex::new(None),
            cpu_quota,
            handles: Mutex::new(Vec::new()),
            applied: Mutex::new(None),
        })
    }

    /// The group's file `name` in `dirs[dir]`, opened with `flags` at its first use.
    fn handle(&self, dir: usize, name: &'static str, flags: i32) -> io::Result<Arc<OwnedFd>> {
        let mut handles = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((.., fd)) = handles
            .iter()
            .find(|(d, n, f, _)| (*d, *n, *f) == (dir, name, flags))
        {
            return Ok(fd.clone());
        }
        let fd = Arc::new(open_at(&self.dirs[dir], name, flags)?);
        handles.push((dir, name, flags, fd.clone()));
        Ok(fd)
    }

    /// Writes `value` to the group's file `name` (one `pwrite` once it is open).
    fn write(&self, dir: usize, name: &'static str, value: &str) -> io::Result<()> {
        let written = self.handle(dir, name, libc::O_WRONLY).and_then(|fd| {
            let n = unsafe { libc::pwrite(fd.as_raw_fd(), value.as_ptr().cast(), value.len(), 0) };
            if n == value.len() as isize {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
        written.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("writing {value} to cgroup file {name}: {e}"),
            )
        })
    }

    /// The group's file `name`, read from its start (a cgroup file is made anew at offset 0).
    fn read(&self, dir: usize, name: &'static str) -> io::Result<String> {
        let fd = self.handle(dir, name, libc::O_RDONLY)?;
        let mut buf = [0u8; 1024];
        let n = unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(String::from_utf8_lossy(&buf[..n as usize]).into_owned())
    }

    fn read_u64(&self, dir: usize, name: &'static str) -> io::Result<u64> {
        self.read(dir, name)?
            .trim()
            .parse()
            .map_err(|_| io::ErrorKind::InvalidData.into())
    }

    /// Index in `dirs` of the memory hierarchy (v1) or the group (v2).
    const MEMORY: usize = 0;

    fn pids_dir(&self) -> usize {
        usize::from(self.version == 1)
    }

    fn cpu_dir(&self) -> usize {
        if self.version == 1 {
            2
        } else {
            0
        }
    }

    /// Caps the group at `cpus` cores' worth of time in every scheduling period, so that a
    /// program with many busy processes takes no more than its share from its neighbours.
    fn apply_cpu_quota(&self, cpus: u32, first: bool) -> io::Result<()> {
        let Some(dir) = self.cpu_quota else {
            return Ok(()); // a v1 host without the cpu controller (the start-up report says so)
        };
        let quota = u64::from(cpus.max(1)) * CPU_PERIOD_US;
        if self.version == 1 {
            if first {
                self.write(dir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
            }
            self.write(dir, "cpu.cfs_quota_us", &quota.to_string())
        } else {
            self.write(dir, "cpu.max", &format!("{quota} {CPU_PERIOD_US}"))
        }
    }

    /// Applies one stage's limits and resets the peak-memory counter. Limits the previous
    /// stage set already are not written again.
    pub fn apply(&self, memory_bytes: u64, processes: u32, cpus: u32) -> io::Result<()> {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        let last = applied.take();
        let memory = Self::MEMORY;
        let (limit, memsw) = ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes");
        let bytes = memory_bytes.to_string();
        if self.version == 1 {
            // memsw must stay >= the memory limit at every moment.
            match last.map(|l| l.0) {
                Some(m) if m == memory_bytes => {}
                Some(m) if m < memory_bytes => {
                    let _ = self.write(memory, memsw, &bytes);
                    self.write(memory, limit, &bytes)?;
                }
                Some(_) => {
                    self.write(memory, limit, &bytes)?;
                    let _ = self.write(memory, memsw, &bytes);
                }
                None => {
                    let _ = self.write(memory, memsw, "-1");
                    self.write(memory, limit, &bytes)?;
                    let _ = self.write(memory, memsw, &bytes);
                }
            }
            let _ = self.write(memory, "memory.max_usage_in_bytes", "0");
        } else {
            if last.map(|l| l.0) != Some(memory_bytes) {
                self.write(memory, "memory.max", &bytes)?;
            }
            if last.is_none() {
                let _ = self.write(memory, "memory.swap.max", "0");
            }
            if let Some(peak) = &self.peak {
                let reset = write_fd(peak, "reset").is_ok();
                *self.peak_before.lock().unwrap_or_else(|p| p.into_inner()) =
                    (!reset).then(|| self.read_peak()).flatten();
            }
        }
        if last.map(|l| l.1) != Some(processes) {
            self.write(self.pids_dir(), "pids.max", &processes.to_string())?;
        }
        if last.map(|l| l.2) != Some(cpus) {
            self.apply_cpu_quota(cpus, last.is_none())?;
        }
        *applied = Some((memory_bytes, processes, cpus));
        Ok(())
    }

    /// Moves the calling process into this cgroup. Called between fork and exec: no allocation.
    /// The `cgroup.procs` handles, for `enter` (or to hand to a process that is not the
    /// runner's child: a fork server's).
    pub fn procs(&self) -> &[OwnedFd] {
        &self.procs
    }

    /// Peak memory of the group since the last `apply`, in bytes. Where the kernel cannot reset
    /// the peak and this stage stayed below an earlier one's, the stage's own is not known to
    /// the group: `process_peak` (the program's maximum resident set) stands in.
    pub fn memory_peak(&self, process_peak: u64) -> u64 {
        if self.version == 1 {
            return self
                .read_u64(Self::MEMORY, "memory.max_usage_in_bytes")
                .unwrap_or(0);
        }
        let Some(peak) = self.read_peak() else {
            return self.read_u64(Self::MEMORY, "memory.current").unwrap_or(0);
        };
        match *self.peak_before.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(before) if peak <= before => process_peak,
            _ => peak,
        }
    }

    /// v2 `memory.peak` as it stands (since the last reset, or since the group was made).
    fn read_peak(&self) -> Option<u64> {
        let peak = self.peak.as_ref()?.try_clone().ok()?;
        let mut text = String::new();
        let mut file = fs::File::from(peak);
        use std::io::Seek;
        file.seek(io::SeekFrom::Start(0)).ok()?;
        file.read_to_string(&mut text).ok()?;
        text.trim().parse().ok()
    }

    /// How many times the kernel's OOM killer has killed a process in this group.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.version == 1 {
            "memory.oom_control"
        } else {
            "memory.events"
        };
        let text = self.read(Self::MEMORY, file).unwrap_or_default();
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
            self.read_u64(self.cpu_dir(), "cpuacct.usage").unwrap_or(0)
        } else {
            let text = self.read(self.cpu_dir(), "cpu.stat").unwrap_or_default();
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
        self.read_u64(self.pids_dir(), "pids.current").ok()
    }

    /// Pids of the processes in the group (v1: from the memory hierarchy).
    pub fn pids_inside(&self) -> Vec<i32> {
        read_at(&self.dirs[Self::MEMORY], "cgroup.procs")
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Kills every process in the group.
    pub fn kill_all(&self) {
        if self.version == 2 && write_at(&self.dirs[Self::MEMORY], "cgroup.kill", "1").is_ok() {
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
            } => {
                assert_eq!(cpu, None, "no cpu controller mounted");
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
    fn a_pure_v2_host_uses_v2() {
        let layout = CgroupLayout::from_mounts(V2_HOST, &|_| {
            "cpuset cpu io memory hugetlb pids rdma misc".into()
        });
        assert!(
            matches!(layout, CgroupLayout::V2 { root, delegated: false } if root == Path::new("/sys/fs/cgroup"))
        );
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

    const USER_SERVICE: &str =
        "0::/user.slice/user-1000.slice/user@1000.service/app.slice/kiln.service\n";

    #[test]
    fn an_unprivileged_kiln_uses_the_subtree_delegated_to_its_own_group() {
        let mount = Path::new("/sys/fs/cgroup");
        let service =
            mount.join("user.slice/user-1000.slice/user@1000.service/app.slice/kiln.service");
        let mine = |p: &Path| p.starts_with(&service);
        let layout =
            CgroupLayout::delegated(mount, USER_SERVICE, &|_| "cpu memory pids".into(), &mine);
        assert!(
            matches!(&layout, CgroupLayout::V2 { root, delegated: true } if *root == service),
            "{layout:?}"
        );
        // Started again from its leaf, it still manages the whole subtree.
        let from_leaf = format!("{}/supervisor\n", USER_SERVICE.trim_end());
        let again =
            CgroupLayout::delegated(mount, &from_leaf, &|_| "cpu memory pids".into(), &mine);
        assert!(
            matches!(&again, CgroupLayout::V2 { root, .. } if *root == service),
            "{again:?}"
        );
    }

    #[test]
    fn a_group_not_delegated_or_without_the_controllers_says_why() {
        let mount = Path::new("/sys/fs/cgroup");
        let not_mine =
            CgroupLayout::delegated(mount, USER_SERVICE, &|_| "cpu memory pids".into(), &|_| {
                false
            });
        match not_mine {
            CgroupLayout::Unavailable { reason } => {
                assert!(
                    reason.contains("not delegated") && reason.contains("Delegate=yes"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
        let no_cpu =
            CgroupLayout::delegated(mount, USER_SERVICE, &|_| "memory pids".into(), &|_| true);
        match no_cpu {
            CgroupLayout::Unavailable { reason } => {
                assert!(
                    reason.contains("[memory pids]") && reason.contains("Delegate=memory pids cpu"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
        // The root of the hierarchy is never a delegated subtree.
        let top =
            CgroupLayout::delegated(mount, "0::/\n", &|_| "cpu memory pids".into(), &|_| true);
        assert!(matches!(top, CgroupLayout::Unavailable { .. }), "{top:?}");
    }
}
