//! Kiln's configuration: one struct, filled from defaults, then an optional TOML file, then
//! `KILN_*` environment variables (nested keys with `__`, e.g. `KILN_LIMITS__MAXIMUM__MEMORY_BYTES`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::submission::LimitPolicy;

/// Everything an operator can set.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Address the HTTP API listens on.
    pub listen: String,
    /// Where the embedded queue keeps its journal and results.
    pub data_dir: PathBuf,
    /// Operator's language registry, merged over the shipped one.
    pub languages_file: Option<PathBuf>,
    /// Standby pods kept ready (one pod runner each); 0 means four per CPU core. More pods than
    /// parallel jobs hide the time it takes to replace a used pod.
    pub pool_size: usize,
    /// Jobs running at once; 0 means one per CPU core, so that wall times stay honest.
    pub max_parallel_jobs: usize,
    /// Accepted but unfinished submissions past which the API answers 429.
    pub max_queue_depth: usize,
    /// Runs of one submission before it is given up as internal_error.
    pub max_attempts: u32,
    /// Bytes of accepted, unfinished submissions past which the API answers 429 (the journal
    /// keeps them on disk).
    pub max_queue_bytes: usize,
    /// Largest HTTP body accepted (413 past it).
    pub max_body_bytes: usize,
    /// Longest `?wait=true` holds a request open.
    pub max_wait_ms: u64,
    /// Most submissions in one batch request.
    pub max_batch: usize,
    /// How long finished results are kept for GET.
    pub result_retention_secs: u64,
    /// Bytes of finished results (with their submissions) kept on disk; past it the oldest are
    /// evicted, and a GET of an evicted id says so (410).
    pub max_results_bytes: u64,
    /// Free space Kiln leaves on the data dir's filesystem: below it submissions are refused
    /// with 507 until space returns.
    pub min_free_bytes: u64,
    /// When set, every /v1 request needs `Authorization: Bearer <token>`.
    pub auth_token: Option<String>,
    /// Networks (CIDR, e.g. `10.1.0.0/16`, or single addresses) that `callback_url` may reach
    /// although they are loopback, link-local or private; none by default.
    pub callback_allowed_networks: Vec<String>,
    /// The `kiln-runner` binary; next to `kiln` when unset.
    pub runner_path: Option<PathBuf>,
    /// Size of each pod's private tmpfs (work dir and /tmp).
    pub tmpfs_bytes: u64,
    /// Entries of the host's /etc that pods see, read-only (paths below /etc, `*` within a
    /// component). Nothing else of the host's /etc is visible; languages add their own (`etc` in
    /// the registry).
    pub pod_etc: Vec<String>,
    /// The unprivileged user programs run as when Kiln runs as root.
    pub sandbox_uid: u32,
    pub sandbox_gid: u32,
    /// Extra time past a job's own limits before the watchdog kills its pod.
    pub watchdog_grace_ms: u64,
    /// Fill toolchain caches (Go's standard library) at start when they are not filled yet.
    /// Filled caches are used either way.
    pub warm_caches: bool,
    /// Where warm caches live; `~/.cache/kiln/warm` when unset.
    pub warm_cache_dir: Option<PathBuf>,
    /// Fork runs of languages marked `fork_server` (Python) from a resident interpreter.
    pub fork_server: bool,
    /// Test setting: probability that a pod runner panics when handed a job.
    pub inject_panic_probability: f64,
    /// `text` or `json`.
    pub log_format: LogFormat,
    pub limits: LimitPolicy,
    /// `embedded` (journaled in the data dir) or `kafka` for `kiln serve`.
    pub queue: QueueKind,
    /// Kafka mode: brokers, topics, group (`kiln scheduler`, `kiln api`, `kiln serve --queue kafka`).
    pub kafka: crate::queue::kafka::KafkaSettings,
    /// `local` (namespaces on this machine) or `kubernetes` (pods through the API server).
    pub pods: PodsKind,
    /// Kubernetes mode: namespace, pools, pod template (`--pods kubernetes`).
    pub kubernetes: crate::pods::kubernetes::KubeSettings,
    /// The APIs of other code runners that Kiln also speaks.
    pub compat: CompatSettings,
    /// Bytes of compiled programs kept by the compile cache (least recently used evicted first);
    /// 0 turns the cache off.
    pub compile_cache_bytes: u64,
    /// Where the compile cache lives; `<data_dir>/compile-cache` when unset.
    pub compile_cache_dir: Option<PathBuf>,
}

/// Judge0's API is always under `/judge0`; these put it at the root as well.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CompatSettings {
    /// Serve Judge0's routes (`/submissions`, `/languages`, `/about`...) at the root too, so a
    /// Judge0 client needs only the host changed.
    pub judge0_at_root: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("kiln-data"),
            languages_file: None,
            pool_size: 0,
            max_parallel_jobs: 0,
            max_queue_depth: 10_000,
            max_attempts: 3,
            max_queue_bytes: 2 << 30,
            max_body_bytes: 32 << 20,
            max_wait_ms: 60_000,
            max_batch: 20,
            result_retention_secs: 24 * 3600,
            max_results_bytes: 1 << 30,
            min_free_bytes: 64 << 20,
            auth_token: None,
            callback_allowed_networks: Vec::new(),
            runner_path: None,
            tmpfs_bytes: 512 << 20,
            pod_etc: crate::sandbox::etc::DEFAULT_POD_ETC
                .iter()
                .map(|s| s.to_string())
                .collect(),
            sandbox_uid: 65534,
            sandbox_gid: 65534,
            watchdog_grace_ms: 5_000,
            warm_caches: true,
            warm_cache_dir: None,
            fork_server: true,
            inject_panic_probability: 0.0,
            log_format: LogFormat::Text,
            limits: LimitPolicy::default(),
            queue: QueueKind::Embedded,
            kafka: Default::default(),
            pods: PodsKind::Local,
            kubernetes: Default::default(),
            compat: Default::default(),
            compile_cache_bytes: 1 << 30,
            compile_cache_dir: None,
        }
    }
}

/// Why Kiln's settings cannot be used: it does not start with them.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {} does not exist", .0.display())]
    NoFile(PathBuf),
    /// The file or the environment does not read as settings (a wrong type, an unknown mode).
    #[error("configuration: {0}")]
    Unreadable(#[from] config::ConfigError),
    /// A number read but out of its range.
    #[error("{setting} {rule}")]
    OutOfRange {
        setting: &'static str,
        rule: &'static str,
    },
    /// A setting read but not valid, and why.
    #[error("{setting}: {why}")]
    Invalid { setting: &'static str, why: String },
}

impl Settings {
    /// Defaults, then `file`, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let defaults = config::Config::try_from(&Settings::default())?;
        let mut builder = config::Config::builder().add_source(defaults);
        if let Some(f) = file {
            if !f.is_file() {
                return Err(ConfigError::NoFile(f.to_path_buf()));
            }
            builder = builder.add_source(config::File::from(f).format(config::FileFormat::Toml));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("KILN")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("callback_allowed_networks")
                .with_list_parse_key("pod_etc"),
        );
        let settings: Settings = builder.build().and_then(|c| c.try_deserialize())?;
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |setting, why: String| ConfigError::Invalid { setting, why };
        if !(0.0..=1.0).contains(&self.inject_panic_probability) {
            return Err(ConfigError::OutOfRange {
                setting: "inject_panic_probability",
                rule: "must be between 0 and 1",
            });
        }
        if self.max_attempts == 0 {
            return Err(ConfigError::OutOfRange {
                setting: "max_attempts",
                rule: "must be at least 1",
            });
        }
        for network in &self.callback_allowed_networks {
            network
                .parse::<crate::callback::Network>()
                .map_err(|e| invalid("callback_allowed_networks", e))?;
        }
        for pattern in &self.pod_etc {
            crate::sandbox::etc::check_pattern(pattern).map_err(|e| invalid("pod_etc", e))?;
        }
        Ok(())
    }

    /// The configured pool size, with 0 meaning four pods per core.
    pub fn effective_pool_size(&self) -> usize {
        if self.pool_size > 0 {
            self.pool_size
        } else {
            4 * cores()
        }
    }

    /// The configured parallelism, with 0 meaning one job per core.
    pub fn effective_max_parallel_jobs(&self) -> usize {
        if self.max_parallel_jobs > 0 {
            self.max_parallel_jobs
        } else {
            cores()
        }
    }
}

/// Warnings for the start-up report: places other users of this host can read that hold what
/// the auth token protects (the token itself in the config file; submissions and results in the
/// data dir), each with the command that fixes it.
pub fn exposed_secrets(settings: &Settings, file: Option<&Path>) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    if settings.auth_token.is_none() {
        return Vec::new();
    }
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| m.permissions().mode() & 0o777)
    };
    let mut warnings = Vec::new();
    if let Some(f) = file {
        let holds_token = std::fs::read_to_string(f).is_ok_and(|t| t.contains("auth_token"));
        if let Some(m) = mode(f).filter(|m| holds_token && m & 0o044 != 0) {
            warnings.push(format!(
                "WARNING: {} holds auth_token and other users can read it (mode {m:o}): run `chmod 600 {}`, or pass the token in KILN_AUTH_TOKEN",
                f.display(),
                f.display()
            ));
        }
    }
    if let Some(m) = mode(&settings.data_dir).filter(|m| m & 0o005 != 0) {
        warnings.push(format!(
            "WARNING: the data dir {} is open to other users (mode {m:o}) while the API needs a token: they can read every submission and result there; run `chmod 700 {}`",
            settings.data_dir.display(),
            settings.data_dir.display()
        ));
    }
    warnings
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_readable_config_file_with_the_token_and_an_open_data_dir_are_reported() {
        let dir = std::env::temp_dir().join(format!("kiln-config-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let file = dir.join("kiln.toml");
        std::fs::write(&file, "auth_token = \"s3cret\"\n").unwrap();
        let set = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        set(&file, 0o644);
        set(&dir.join("data"), 0o755);
        let settings = Settings {
            auth_token: Some("s3cret".into()),
            data_dir: dir.join("data"),
            ..Settings::default()
        };
        let warnings = exposed_secrets(&settings, Some(&file));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("chmod 600"), "{warnings:?}");
        assert!(warnings[1].contains("chmod 700"), "{warnings:?}");
        set(&file, 0o600);
        set(&dir.join("data"), 0o700);
        assert!(exposed_secrets(&settings, Some(&file)).is_empty());
        let open = Settings {
            auth_token: None,
            ..settings
        };
        set(&file, 0o644);
        assert!(
            exposed_secrets(&open, Some(&file)).is_empty(),
            "no token, no secret"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn settings_kiln_cannot_start_with_are_refused_by_kind() {
        let dir = std::env::temp_dir().join(format!("kiln-config-refused-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("kiln.toml");
        let load = |text: &str| {
            std::fs::write(&file, text).unwrap();
            Settings::load(Some(&file)).unwrap_err()
        };
        let e = load("max_attempts = 0\n");
        assert!(matches!(
            e,
            ConfigError::OutOfRange {
                setting: "max_attempts",
                ..
            }
        ));
        assert_eq!(e.to_string(), "max_attempts must be at least 1");
        let e = load("callback_allowed_networks = [\"10.0.0.0/99\"]\n");
        assert!(matches!(
            e,
            ConfigError::Invalid {
                setting: "callback_allowed_networks",
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            "callback_allowed_networks: \"10.0.0.0/99\": the prefix length must be 0 to 32"
        );
        let e = load("max_attempts = \"many\"\n");
        assert!(matches!(e, ConfigError::Unreadable(_)), "{e:?}");
        assert!(e.to_string().starts_with("configuration: "), "{e}");
        let missing = dir.join("absent.toml");
        let e = Settings::load(Some(&missing)).unwrap_err();
        assert!(matches!(&e, ConfigError::NoFile(p) if p == &missing));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn modes_are_parsed_once_and_unknown_ones_are_refused_with_the_choices() {
        let dir = std::env::temp_dir().join(format!("kiln-config-modes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("kiln.toml");
        std::fs::write(
            &file,
            "queue = \"kafka\"\npods = \"kubernetes\"\nlog_format = \"json\"\n",
        )
        .unwrap();
        let settings = Settings::load(Some(&file)).unwrap();
        assert_eq!(settings.queue, QueueKind::Kafka);
        assert_eq!(settings.pods, PodsKind::Kubernetes);
        assert_eq!(settings.log_format, LogFormat::Json);
        let defaults = Settings::load(None).unwrap();
        assert_eq!(
            (defaults.queue, defaults.pods, defaults.log_format),
            (QueueKind::Embedded, PodsKind::Local, LogFormat::Text)
        );

        std::fs::write(&file, "pods = \"docker\"\n").unwrap();
        let refused = Settings::load(Some(&file)).unwrap_err();
        assert!(matches!(refused, ConfigError::Unreadable(_)), "{refused:?}");
        let refused = refused.to_string();
        assert!(
            refused.contains("docker")
                && refused.contains("local")
                && refused.contains("kubernetes"),
            "{refused}"
        );

        assert_eq!("kafka".parse::<QueueKind>(), Ok(QueueKind::Kafka));
        assert_eq!(
            "rabbitmq".parse::<QueueKind>(),
            Err("queue must be embedded or kafka, not \"rabbitmq\"".to_string())
        );
        assert_eq!(
            "yaml".parse::<LogFormat>(),
            Err("log_format must be text or json, not \"yaml\"".to_string())
        );
        assert_eq!(PodsKind::Kubernetes.to_string(), "kubernetes");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Declares a setting that is one of a few names: parsed once (from the config file, the
/// environment or a flag), an unknown name refused with the ones it could be.
macro_rules! mode {
    ($(#[$doc:meta])* $name:ident, $setting:literal { $($variant:ident = $text:literal),+ }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase", try_from = "String")]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                match text {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(format!(
                        concat!($setting, " must be ", mode!(@names $($text),+), ", not {:?}"),
                        text
                    )),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(text: String) -> Result<Self, String> {
                text.parse()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
    (@names $first:literal, $second:literal) => { concat!($first, " or ", $second) };
}

mode!(
    /// Where submissions wait: journaled in the data dir, or on Kafka's topics.
    QueueKind, "queue" { Embedded = "embedded", Kafka = "kafka" }
);
mode!(
    /// Where jobs run: namespace pods on this machine, or Kubernetes pods.
    PodsKind, "pods" { Local = "local", Kubernetes = "kubernetes" }
);
mode!(
    /// How the log reads: text lines or JSON lines.
    LogFormat, "log_format" { Text = "text", Json = "json" }
);
