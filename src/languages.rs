//! The language registry: a TOML file (shipped default plus an operator's override) that says how
//! to find each toolchain and how to compile and run with it. At start every entry is resolved to
//! real binaries on this host (never shims: a pyenv shim costs ~70 ms a run) and its version read;
//! the ones the host lacks are listed as unavailable, with the reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::entry_point::{EntryNames, EntryPoint, PLACEHOLDERS};
use crate::Locked as _;

/// The registry shipped with Kiln.
pub const DEFAULT_REGISTRY: &str = include_str!("../config/languages.toml");

/// Directories every pod already sees, and /etc, which is never mounted whole (pods see only its
/// allow-listed entries); toolchains elsewhere are mounted separately.
const SYSTEM_PREFIXES: &[&str] = &["/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/", "/etc/"];

#[derive(Debug, Deserialize)]
struct RegistryFile {
    #[serde(default)]
    language: Vec<Entry>,
}

/// One `[[language]]` entry as written in the file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub binaries: Vec<String>,
    /// Binaries at a fixed path instead of the ones found on PATH (`python3 =
    /// "/opt/venv/bin/python3"`). Used as given, not followed through symlinks, so that a
    /// virtualenv's interpreter stays in its virtualenv; its directory is made visible in pods.
    #[serde(default)]
    pub paths: BTreeMap<String, PathBuf>,
    /// The binaries may be scripts (Debian's `erl` and `ghc` are): found as they are, not
    /// skipped for being no ELF file.
    #[serde(default)]
    pub scripts: bool,
    #[serde(default)]
    pub sysroot: Option<Vec<String>>,
    pub version: Vec<String>,
    pub entry: String,
    #[serde(default)]
    pub compile: Option<Vec<String>>,
    pub run: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Floors for the compile step's limits (compilers need more than programs).
    #[serde(default)]
    pub compile_limits: LimitOverrides,
    /// Floors for the run step's limits (a JVM needs threads).
    #[serde(default)]
    pub run_limits: LimitOverrides,
    /// A build cache to fill once per host and lay under every pod.
    #[serde(default)]
    pub warm_cache: Option<WarmCache>,
    /// CPython only: keep one interpreter started per host and fork each run from it
    /// (runner/pyfork/). Runs behave as if `run` had been exec'd.
    #[serde(default)]
    pub fork_server: bool,
    /// The rule `{main}` (the class or module to start) follows, and which sources are scripts.
    #[serde(default)]
    pub entry_point: Option<EntryPoint>,
    /// What was `entry_point = "java"` before there were other rules: still read.
    #[serde(default)]
    pub class_from_source: bool,
    /// How a source that the entry point calls a script is compiled and run instead.
    #[serde(default)]
    pub as_script: Option<Commands>,
    /// Files the compile step makes under fixed names (`main`): a submitted file may not be
    /// called so, or the build would overwrite it.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// Host paths outside /usr the toolchain reads (Debian's GHC keeps its package database in
    /// /var/lib/ghc): pods see them read-only.
    #[serde(default)]
    pub mounts: Vec<PathBuf>,
    /// Entries of the host's /etc this toolchain reads (paths below /etc, `*` within a
    /// component): pods see them read-only beside the server's `pod_etc`.
    #[serde(default)]
    pub etc: Vec<String>,
}

/// A compile step (when there is one) and a run step, as command lines.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commands {
    #[serde(default)]
    pub compile: Option<Vec<String>>,
    pub run: Vec<String>,
}

/// A toolchain cache that is expensive to fill (Go rebuilds its standard library into an empty
/// GOCACHE: ~5 s for hello world). Kiln fills it once at start by running `command` with the
/// environment variable `env` pointing at a host directory; pods then see that directory
/// read-only under a private writable layer, at the path `env` has in the language's `env`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmCache {
    pub env: String,
    pub command: Vec<String>,
}

fn yes() -> bool {
    true
}

/// Limit floors a language sets for itself.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    pub wall_time_ms: Option<u64>,
    pub cpu_time_ms: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub processes: Option<u32>,
    pub cpus: Option<u32>,
}

/// A language this host can run.
#[derive(Clone, Debug)]
pub struct Language {
    pub name: String,
    pub version: String,
    pub aliases: Vec<String>,
    /// The entry file's name when a submission gives none.
    pub entry: String,
    /// The command lines for a program under the default entry name (what `/languages` shows).
    pub compile: Option<Vec<String>>,
    pub run: Vec<String>,
    /// The command lines with the entry's placeholders left for each job (`commands_for`).
    pub commands: Commands,
    pub as_script: Option<Commands>,
    pub entry_point: Option<EntryPoint>,
    /// Names a submitted file may not take: the compile step makes files under them.
    pub outputs: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Toolchain directories outside the system dirs that pods must see read-only.
    pub mounts: Vec<PathBuf>,
    pub compile_limits: LimitOverrides,
    pub run_limits: LimitOverrides,
    /// The cache to warm, with its command resolved, and where pods see it.
    pub warm_cache: Option<(WarmCache, PathBuf)>,
    pub fork_server: bool,
    /// Entries of the host's /etc the toolchain reads.
    pub etc: Vec<String>,
}

/// All languages, resolved against this host.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    pub available: Vec<Language>,
    /// Entries whose toolchain this host lacks, and why.
    pub unavailable: Vec<(String, String)>,
}

/// Why a submission's language cannot be run here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LanguageError {
    #[error("unknown language {name:?}{}; available: {}", unavailable.as_ref().map(|why| format!(" (not available on this host: {why})")).unwrap_or_default(), available.join(", "))]
    Unknown {
        name: String,
        /// Why this host cannot run it, when the registry knows the language.
        unavailable: Option<String>,
        available: Vec<String>,
    },
    #[error("{name} {asked} is not available; this host has {name} {here}")]
    NoSuchVersion {
        name: String,
        asked: String,
        here: String,
    },
}

impl Registry {
    /// Reads the shipped registry and the optional override, and resolves every entry.
    pub fn load(override_file: Option<&Path>) -> Result<Registry, String> {
        let mut entries =
            parse(DEFAULT_REGISTRY).map_err(|e| format!("the built-in language registry: {e}"))?;
        if let Some(path) = override_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            for entry in parse(&text).map_err(|e| format!("{}: {e}", path.display()))? {
                entries.retain(|e| e.name != entry.name);
                entries.push(entry);
            }
        }
        let probes = ProbeCache::load();
        let resolved: Vec<(String, Result<Language, String>)> = std::thread::scope(|s| {
            let probes = &probes;
            let handles: Vec<_> = entries
                .iter()
                .filter(|e| e.enabled)
                .map(|e| (e.name.clone(), s.spawn(move || resolve(e, probes))))
                .collect();
            handles
                .into_iter()
                .map(|(n, h)| {
                    (
                        n,
                        h.join().unwrap_or_else(|_| Err("resolver panicked".into())),
                    )
                })
                .collect()
        });
        probes.save();
        let mut registry = Registry::default();
        for (name, r) in resolved {
            match r {
                Ok(lang) => registry.available.push(lang),
                Err(why) => registry.unavailable.push((name, why)),
            }
        }
        Ok(registry)
    }

    /// Finds a language by name or alias, and by version prefix when one is given.
    pub fn find(&self, name: &str, version: Option<&str>) -> Result<&Language, LanguageError> {
        let wanted = name.to_ascii_lowercase();
        let lang = self
            .available
            .iter()
            .find(|l| l.name == wanted || l.aliases.contains(&wanted))
            .ok_or_else(|| LanguageError::Unknown {
                name: name.to_string(),
                unavailable: self
                    .unavailable
                    .iter()
                    .find(|(n, _)| *n == wanted)
                    .map(|(_, why)| why.clone()),
                available: self.available.iter().map(|l| l.name.clone()).collect(),
            })?;
        match version {
            None | Some("*") | Some("") => Ok(lang),
            Some(v) if version_matches(&lang.version, v) => Ok(lang),
            Some(v) => Err(LanguageError::NoSuchVersion {
                name: lang.name.clone(),
                asked: v.to_string(),
                here: lang.version.clone(),
            }),
        }
    }

    /// The language whose runs fork from a resident interpreter (the first one that asks).
    pub fn fork_server(&self) -> Option<crate::pods::fork_server::ForkServerSpec> {
        let lang = self.available.iter().find(|l| l.fork_server)?;
        let mut parts = lang.version.split('.');
        let python_version = format!("{}.{}", parts.next()?, parts.next()?);
        Some(crate::pods::fork_server::ForkServerSpec {
            language: lang.name.clone(),
            python_version,
            command: kiln_wire::setup::ForkedCommand {
                argv: lang.run.clone(),
                env: lang.env.clone(),
            },
        })
    }

    /// The /etc entries some available toolchain reads.
    pub fn etc_patterns(&self) -> Vec<String> {
        self.union_of(|l| &l.etc)
    }

    /// Every directory some toolchain needs visible inside pods.
    pub fn mounts(&self) -> Vec<PathBuf> {
        self.union_of(|l| &l.mounts)
    }

    /// What any available language lists in one of its fields, sorted, once each.
    fn union_of<T: Ord + Clone>(&self, field: impl Fn(&Language) -> &Vec<T>) -> Vec<T> {
        let mut all: Vec<T> = self
            .available
            .iter()
            .flat_map(|l| field(l).iter().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

impl Language {
    /// The compile and run command lines of a job whose entry file has these names (the
    /// `as_script` ones for a source the entry point calls a script), for a run of
    /// `memory_bytes`. The limits are filled first, so that no file name is read as one.
    pub fn commands_for(
        &self,
        names: &EntryNames,
        memory_bytes: u64,
    ) -> (Option<Vec<String>>, Vec<String>) {
        let commands = match &self.as_script {
            Some(script) if names.script => script,
            _ => &self.commands,
        };
        let fill = |argv: &[String]| names.fill(&fill_limits(argv, memory_bytes));
        (commands.compile.as_deref().map(fill), fill(&commands.run))
    }
}

/// "3" matches 3.11.2, "3.11" matches 3.11.2, "3.1" does not.
fn version_matches(have: &str, want: &str) -> bool {
    let have: Vec<&str> = have.split('.').collect();
    let want: Vec<&str> = want.trim_start_matches('v').split('.').collect();
    want.len() <= have.len()
        && want
            .iter()
            .zip(&have)
            .all(|(w, h)| w == h || *w == "x" || *w == "*")
}

fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let file: RegistryFile = toml::from_str(text).map_err(|e| e.to_string())?;
    for e in &file.language {
        if e.binaries.is_empty() || e.run.is_empty() || e.version.is_empty() {
            return Err(format!(
                "language {:?} needs binaries, version and run",
                e.name
            ));
        }
        for pattern in &e.etc {
            crate::sandbox::etc::check_pattern(pattern)
                .map_err(|why| format!("language {:?}: etc: {why}", e.name))?;
        }
        let script = e
            .as_script
            .iter()
            .flat_map(|s| s.compile.iter().chain([&s.run]));
        for argv in e.compile.iter().chain([&e.run]).chain(script) {
            for arg in argv {
                let names_entry = PLACEHOLDERS.iter().any(|p| arg.contains(p));
                if names_entry && arg.contains(char::is_whitespace) {
                    return Err(format!(
                        "language {:?}: {arg:?} puts the entry file's name into a script, where \
                         a name with spaces or quotes would be read as code: pass it as an \
                         argument of its own (a shell script reads it as \"$1\")",
                        e.name
                    ));
                }
            }
        }
    }
    Ok(file.language)
}

fn resolve(entry: &Entry, probes: &ProbeCache) -> Result<Language, String> {
    let mut bins: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut mounts = Vec::new();
    for name in &entry.binaries {
        let path = match entry.paths.get(name) {
            Some(given) => {
                let real = std::fs::canonicalize(given)
                    .map_err(|e| format!("{name} at {}: {e}", given.display()))?;
                if !real.is_file() {
                    return Err(format!("{name} at {} is not a file", given.display()));
                }
                if !SYSTEM_PREFIXES.iter().any(|p| real.starts_with(p)) {
                    mounts.push(toolchain_root(&real));
                }
                given.clone()
            }
            None => find_real_binary(name, entry.scripts)?,
        };
        bins.insert(name.clone(), path);
    }
    if let Some(cmd) = &entry.sysroot {
        let out = run_capture(&substitute(cmd, &bins))?;
        let sysroot = PathBuf::from(out.trim());
        for (name, path) in bins.iter_mut() {
            let inside = sysroot.join("bin").join(name);
            if inside.is_file() {
                *path = inside;
            }
        }
        mounts.push(sysroot);
    }
    for path in bins.values() {
        if !SYSTEM_PREFIXES.iter().any(|p| path.starts_with(p)) {
            mounts.push(toolchain_root(path));
        }
    }
    for path in &entry.mounts {
        if !path.exists() {
            return Err(format!("{} is not on this host", path.display()));
        }
        mounts.push(path.clone());
    }
    let version_text = probes.version(&substitute(&entry.version, &bins))?;
    let version = extract_version(&version_text).ok_or_else(|| {
        format!(
            "no version number in the output of {:?}: {version_text:?}",
            entry.version
        )
    })?;

    let mut path_dirs: Vec<String> = bins
        .values()
        .filter_map(|p| p.parent())
        .map(|d| d.display().to_string())
        .collect();
    path_dirs.extend(["/usr/local/bin", "/usr/bin", "/bin"].map(String::from));
    path_dirs.dedup();
    let mut env = vec![
        ("PATH".to_string(), path_dirs.join(":")),
        ("HOME".into(), "/tmp".into()),
        ("TMPDIR".into(), "/tmp".into()),
        ("LANG".into(), "C.UTF-8".into()),
    ];
    env.extend(entry.env.iter().map(|(k, v)| (k.clone(), v.clone())));

    let commands = Commands {
        compile: entry.compile.as_ref().map(|c| substitute(c, &bins)),
        run: substitute(&entry.run, &bins),
    };
    let entry_point = entry
        .entry_point
        .or(entry.class_from_source.then_some(EntryPoint::Java));
    let default = EntryNames::of(&entry.entry, "", entry_point);
    Ok(Language {
        name: entry.name.clone(),
        version,
        aliases: entry.aliases.clone(),
        entry: entry.entry.clone(),
        compile: commands.compile.as_ref().map(|c| default.fill(c)),
        run: default.fill(&commands.run),
        commands,
        as_script: entry.as_script.as_ref().map(|s| Commands {
            compile: s.compile.as_ref().map(|c| substitute(c, &bins)),
            run: substitute(&s.run, &bins),
        }),
        entry_point,
        outputs: entry.outputs.clone(),
        env,
        mounts,
        compile_limits: entry.compile_limits.clone(),
        run_limits: entry.run_limits.clone(),
        warm_cache: entry.warm_cache.as_ref().map(|w| {
            let command = WarmCache {
                env: w.env.clone(),
                command: substitute(&w.command, &bins),
            };
            (command, PathBuf::from(&entry.env[&w.env]))
        }),
        fork_server: entry.fork_server,
        etc: entry.etc.clone(),
    })
}

/// Replaces `{binary}`; the entry's placeholders and `{memory_*}` stay for the job to fill.
fn substitute(argv: &[String], bins: &BTreeMap<String, PathBuf>) -> Vec<String> {
    argv.iter()
        .map(|arg| {
            let mut out = arg.clone();
            for (name, path) in bins {
                out = out.replace(&format!("{{{name}}}"), &path.display().to_string());
            }
            out
        })
        .collect()
}

/// Fills the per-job placeholders of a command line.
fn fill_limits(argv: &[String], memory_bytes: u64) -> Vec<String> {
    argv.iter()
        .map(|a| {
            a.replace("{memory_bytes}", &memory_bytes.to_string())
                .replace("{memory_mb}", &(memory_bytes >> 20).to_string())
        })
        .collect()
}

/// Finds `name` on PATH, skipping shims and wrapper scripts, and follows symlinks to the file
/// that really runs.
fn find_real_binary(name: &str, scripts: bool) -> Result<PathBuf, String> {
    let path = std::env::var("PATH").unwrap_or_default();
    let mut dirs: Vec<String> = path
        .split(':')
        .filter(|d| !d.is_empty())
        .map(String::from)
        .collect();
    // Where toolchains usually live, for services started with a minimal PATH.
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    for extra in [
        "/usr/local/bin".to_string(),
        "/usr/bin".into(),
        "/bin".into(),
        "/usr/local/go/bin".into(),
        format!("{home}/.cargo/bin"),
    ] {
        if !dirs.contains(&extra) {
            dirs.push(extra);
        }
    }
    let mut skipped = Vec::new();
    for dir in dirs {
        let candidate = Path::new(&dir).join(name);
        let Ok(real) = std::fs::canonicalize(&candidate) else {
            continue;
        };
        if !real.is_file() {
            continue;
        }
        if dir.contains("/shims") || (!scripts && !is_elf(&real)) {
            skipped.push(candidate.display().to_string());
            continue;
        }
        // A multi-call binary (rustup, busybox) decides what to be from the name it is run by:
        // keep that name.
        if real.file_name() != candidate.file_name()
            && !real
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(name))
        {
            return Ok(candidate);
        }
        return Ok(real);
    }
    if skipped.is_empty() {
        Err(format!("{name} is not installed (not found on PATH)"))
    } else {
        Err(format!(
            "{name} was found only as shims or scripts ({}), not as a real binary",
            skipped.join(", ")
        ))
    }
}

fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// `/opt/x/bin/tool` -> `/opt/x`; `/opt/tool` -> `/opt`.
fn toolchain_root(binary: &Path) -> PathBuf {
    let dir = binary.parent().unwrap_or(Path::new("/"));
    if dir.file_name().is_some_and(|n| n == "bin") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

fn run_capture(argv: &[String]) -> Result<String, String> {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .env("GOTOOLCHAIN", "local")
        .output()
        .map_err(|e| format!("running {}: {e}", argv[0]))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(text)
}

/// Version probes' outputs, kept on disk between starts (`~/.cache/kiln/probes.json`): a JVM
/// language's probe costs a second of CPU, and every `kiln` process loads the registry. An entry
/// is keyed by the probe's command line and the size and modification time of every file it
/// names (the binaries, classpath jars), so an upgraded toolchain is probed again.
struct ProbeCache {
    path: Option<PathBuf>,
    known: std::collections::HashMap<String, String>,
    fresh: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl ProbeCache {
    fn load() -> ProbeCache {
        let path = std::env::var_os("KILN_PROBE_CACHE")
            .map(PathBuf::from)
            .or_else(|| {
                let base = std::env::var_os("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .or_else(|| {
                        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache"))
                    })?;
                Some(base.join("kiln").join("probes.json"))
            })
            .filter(|p| p.as_os_str() != "off");
        let known = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        ProbeCache {
            path,
            known,
            fresh: Default::default(),
        }
    }

    fn key(argv: &[String]) -> String {
        let mut key = argv.join("\u{1f}");
        for token in argv {
            for piece in token.split([':', ',', '=']) {
                let piece = piece.trim_end_matches('*').trim_end_matches('/');
                if !piece.starts_with('/') {
                    continue;
                }
                if let Ok(m) = std::fs::metadata(piece) {
                    let mtime = m
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_nanos())
                        .unwrap_or(0);
                    key.push_str(&format!("\u{1f}{piece}:{}:{mtime}", m.len()));
                }
            }
        }
        key
    }

    /// The probe's output, from the cache or by running it.
    fn version(&self, argv: &[String]) -> Result<String, String> {
        let key = ProbeCache::key(argv);
        if let Some(text) = self.known.get(&key) {
            return Ok(text.clone());
        }
        let text = run_capture(argv)?;
        self.fresh.locked().insert(key, text.clone());
        Ok(text)
    }

    /// Writes what was probed this time beside what was known (atomically; best effort).
    fn save(&self) {
        let fresh = self.fresh.locked();
        let Some(path) = &self.path else { return };
        if fresh.is_empty() {
            return;
        }
        let mut all = self.known.clone();
        all.extend(fresh.iter().map(|(k, v)| (k.clone(), v.clone())));
        let Some(dir) = path.parent() else { return };
        let _ = std::fs::create_dir_all(dir);
        let tmp = dir.join(format!(".probes-{}.json", std::process::id()));
        if let Ok(bytes) = serde_json::to_vec(&all) {
            if std::fs::write(&tmp, bytes).is_ok() {
                let _ = std::fs::rename(&tmp, path);
            }
        }
    }
}

/// The first `N.N[.N...]` in a tool's version output.
fn extract_version(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            let candidate = text[start..i].trim_end_matches('.');
            if candidate.contains('.') {
                return Some(candidate.to_string());
            }
        } else {
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_typical_tool_output() {
        assert_eq!(
            extract_version("rustc 1.95.0 (59807616e 2026-04-14)").as_deref(),
            Some("1.95.0")
        );
        assert_eq!(extract_version("go1.26.8\n").as_deref(), Some("1.26.8"));
        assert_eq!(extract_version("javac 17.0.15").as_deref(), Some("17.0.15"));
        assert_eq!(extract_version("v20.20.2").as_deref(), Some("20.20.2"));
        assert_eq!(extract_version("no digits"), None);
    }

    #[test]
    fn version_prefixes_match_whole_components() {
        assert!(version_matches("3.11.2", "3"));
        assert!(version_matches("3.11.2", "3.11"));
        assert!(!version_matches("3.11.2", "3.1"));
        assert!(!version_matches("3.11.2", "3.11.2.1"));
    }

    #[test]
    fn an_override_replaces_and_disables_shipped_entries() {
        let dir = std::env::temp_dir().join(format!("kiln-lang-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("languages.toml");
        std::fs::write(
            &file,
            "[[language]]\nname = \"bash\"\nenabled = false\nbinaries = [\"bash\"]\nversion = [\"x\"]\nentry = \"a\"\nrun = [\"x\"]\n",
        )
        .unwrap();
        let reg = Registry::load(Some(&file)).unwrap();
        assert!(reg.find("bash", None).is_err());
        assert!(
            reg.find("python", None).is_ok(),
            "python3 is on every supported host"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_pinned_binary_path_is_used_as_given_and_made_visible() {
        let dir = std::env::temp_dir().join(format!("kiln-pinned-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let real = find_real_binary("python3", false).unwrap();
        std::os::unix::fs::symlink(&real, dir.join("bin/python3")).unwrap();
        let pinned = dir.join("bin/python3");
        let text = format!(
            "[[language]]\nname = \"py-pinned\"\nbinaries = [\"python3\"]\n\
             paths = {{ python3 = \"{}\" }}\n\
             version = [\"{{python3}}\", \"-c\", \"import platform; print(platform.python_version())\"]\n\
             entry = \"main.py\"\nrun = [\"{{python3}}\", \"{{entry}}\"]\n",
            pinned.display()
        );
        let entries = parse(&text).unwrap();
        let lang = resolve(&entries[0], &ProbeCache::load()).unwrap();
        // Not followed to the interpreter it links to: a virtualenv stays one.
        assert_eq!(lang.run[0], pinned.display().to_string());
        assert!(lang.mounts.contains(&dir), "{:?}", lang.mounts);
        // A pinned path that is not there says so.
        let missing = text.replace("bin/python3", "bin/nothing");
        let err = resolve(&parse(&missing).unwrap()[0], &ProbeCache::load()).unwrap_err();
        assert!(err.contains("bin/nothing"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_shipped_command_names_the_entry_file_but_through_its_placeholders() {
        for e in parse(DEFAULT_REGISTRY).unwrap() {
            let script = e
                .as_script
                .iter()
                .flat_map(|s| s.compile.iter().chain([&s.run]));
            for argv in e.compile.iter().chain([&e.run]).chain(script) {
                // multi-file's entry is its archive's `run` script, by that name.
                if e.name == "multi-file" {
                    continue;
                }
                assert!(
                    !argv.iter().any(|a| a.contains(&e.entry)),
                    "{}: {argv:?} names {} instead of {{entry}}",
                    e.name,
                    e.entry
                );
            }
        }
    }

    #[test]
    fn an_entry_placeholder_inside_a_script_is_refused() {
        let entry = |run: &str| {
            format!(
                "[[language]]\nname = \"x\"\nbinaries = [\"sh\"]\nversion = [\"x\"]\nentry = \"a.x\"\nrun = {run}\n"
            )
        };
        let err = parse(&entry(r#"["{sh}", "-c", "cat {entry}"]"#)).unwrap_err();
        assert!(err.contains("\"$1\""), "{err}");
        assert!(parse(&entry(r#"["{sh}", "-c", "cat \"$1\"", "sh", "{entry}"]"#)).is_ok());
        assert!(parse(&entry(r#"["node", "{entry_stem}.js"]"#)).is_ok());
    }

    #[test]
    fn a_language_that_cannot_run_here_says_why_by_its_variant() {
        let mut reg = Registry::load(None).unwrap();
        reg.unavailable
            .push(("nosuchlang".into(), "no nosuchlang-compiler on PATH".into()));
        let python = reg.find("Python", None).unwrap();
        assert_eq!(python.name, "python");
        let e = reg.find("nosuchlang", None).unwrap_err();
        let LanguageError::Unknown {
            unavailable,
            available,
            ..
        } = &e
        else {
            panic!("{e:?}");
        };
        assert_eq!(
            unavailable.as_deref(),
            Some("no nosuchlang-compiler on PATH")
        );
        assert!(available.iter().any(|n| n == "python"));
        assert!(e.to_string().starts_with(
            "unknown language \"nosuchlang\" (not available on this host: no nosuchlang-compiler on PATH); available: "
        ));
        let LanguageError::Unknown { unavailable, .. } = reg.find("cobolx", None).unwrap_err()
        else {
            panic!("not unknown");
        };
        assert_eq!(unavailable, None);
        let e = reg.find("python", Some("1")).unwrap_err();
        assert_eq!(
            e,
            LanguageError::NoSuchVersion {
                name: "python".into(),
                asked: "1".into(),
                here: python.version.clone(),
            }
        );
        assert_eq!(
            e.to_string(),
            format!(
                "python 1 is not available; this host has python {}",
                python.version
            )
        );
    }

    #[test]
    fn shims_are_not_chosen() {
        let reg = Registry::load(None).unwrap();
        let py = reg.find("py", None).unwrap();
        assert!(!py.run[0].contains("shims"), "{:?}", py.run);
        assert!(is_elf(Path::new(&py.run[0])));
    }
}

#[cfg(test)]
mod probe_cache_tests {
    use super::ProbeCache;

    #[test]
    fn a_changed_toolchain_file_changes_the_key() {
        let dir = std::env::temp_dir().join(format!("kiln-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let jar = dir.join("tool.jar");
        std::fs::write(&jar, b"one").unwrap();
        let argv = vec![
            "/bin/true".to_string(),
            "-cp".into(),
            format!("{}:/nonexistent", jar.display()),
        ];
        let before = ProbeCache::key(&argv);
        assert_eq!(before, ProbeCache::key(&argv));
        std::fs::write(&jar, b"two, longer").unwrap();
        assert_ne!(
            before,
            ProbeCache::key(&argv),
            "an upgraded jar is probed again"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
