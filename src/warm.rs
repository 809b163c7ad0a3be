//! Warm caches: some toolchains pay a large one-time cost into a cache (Go builds its standard
//! library into GOCACHE: ~5 s for hello world in an empty one). Kiln fills each such cache once
//! per host, in the background at low priority, and then lays it read-only into every new pod.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::languages::{Language, Registry, WarmCache};
use crate::pods::local::LocalBackend;

const MARKER: &str = ".kiln-warm";

/// Default home of the caches: shared by every Kiln on the host, whatever its data dir.
pub fn default_root() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("kiln").join("warm")
}

/// Lays every cache already filled under `root` into pods at once (so that the first pods have
/// them), then, when `fill`, fills the missing ones on a background thread and lays each in as it
/// is ready. Pods made before that run cold.
pub fn start(registry: Arc<Registry>, root: PathBuf, backend: Arc<LocalBackend>, fill: bool) {
    let mut missing = Vec::new();
    for lang in &registry.available {
        let Some((_, pod_path)) = &lang.warm_cache else {
            continue;
        };
        let dir = root.join(format!("{}-{}", lang.name, lang.version));
        if dir.join(MARKER).is_file() {
            use_cache(&backend, lang, dir, pod_path);
        } else {
            missing.push(lang.name.clone());
        }
    }
    if !fill || missing.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new().name("kiln-warm".into()).spawn(move || {
        for lang in registry.available.iter().filter(|l| missing.contains(&l.name)) {
            let Some((warm, pod_path)) = &lang.warm_cache else { continue };
            let dir = root.join(format!("{}-{}", lang.name, lang.version));
            match fill_cache(&dir, lang, warm) {
                Ok(()) => use_cache(&backend, lang, dir, pod_path),
                Err(e) => tracing::warn!(language = %lang.name, error = %e, "could not warm the cache; compiles stay cold"),
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the cache warmer");
    }
}

fn use_cache(backend: &LocalBackend, lang: &Language, dir: PathBuf, pod_path: &Path) {
    let shown = dir.display().to_string();
    if backend.add_overlay(dir, pod_path.to_path_buf()) {
        tracing::info!(language = %lang.name, cache = %shown, "warm cache in use for new pods");
    }
}

/// Runs the language's warm command with its cache variable pointing at `dir`.
fn fill_cache(dir: &Path, lang: &Language, warm: &WarmCache) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    tracing::info!(language = %lang.name, command = ?warm.command, "filling the warm cache");
    let mut cmd = Command::new(&warm.command[0]);
    cmd.args(&warm.command[1..])
        .env_clear()
        .envs(lang.env.iter().map(|(k, v)| (k, v)))
        .env(&warm.env, dir)
        .current_dir(dir);
    unsafe {
        use std::os::unix::process::CommandExt;
        // Background work: jobs come first.
        cmd.pre_exec(|| {
            libc::setpriority(libc::PRIO_PROCESS, 0, 19);
            Ok(())
        });
    }
    let out = cmd
        .output()
        .map_err(|e| format!("running {}: {e}", warm.command[0]))?;
    if !out.status.success() {
        return Err(format!(
            "{:?} failed: {}",
            warm.command,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    std::fs::write(dir.join(MARKER), lang.version.as_bytes())
        .map_err(|e| format!("writing the marker: {e}"))
}
