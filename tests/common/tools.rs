//! Client tools from public registries that tests drive Kiln with (an SDK from PyPI, packages
//! from npm), installed once into ~/.cache/kiln/<name> and reused. A test that cannot get them
//! fails under CI=true and is skipped (saying so) elsewhere.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

pub fn cache_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into())
        .join(".cache/kiln")
}

/// What to do when a tool could not be had: fail in CI, else say why and skip.
pub fn unavailable(what: &str) -> bool {
    assert!(
        std::env::var("CI").is_err(),
        "CI needs {what}, which could not be installed"
    );
    eprintln!("skipped: {what} could not be installed");
    false
}

/// A venv holding `package` (pinned, `name==version`) from PyPI; its python.
pub fn pypi(dir: &str, package: &str) -> Option<PathBuf> {
    let venv = cache_dir().join(dir);
    let python = venv.join("bin/python");
    if python.exists() {
        return Some(python);
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", package])
            .status()
            .is_ok_and(|s| s.success());
    if made {
        return Some(python);
    }
    let _ = std::fs::remove_dir_all(&venv);
    None
}

/// A directory with `packages` (pinned, `name@version`) installed from npm under node_modules;
/// a script copied into it resolves them.
pub fn npm(dir: &str, packages: &[&str]) -> Option<PathBuf> {
    let root = cache_dir().join(dir);
    let marker = root.join(".installed");
    if marker.exists() {
        return Some(root);
    }
    std::fs::create_dir_all(&root).ok()?;
    std::fs::write(
        root.join("package.json"),
        "{\"private\": true, \"type\": \"module\"}",
    )
    .ok()?;
    let ok = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent"])
        .args(packages)
        .current_dir(&root)
        .status()
        .is_ok_and(|s| s.success());
    if ok && std::fs::write(&marker, packages.join("\n")).is_ok() {
        return Some(root);
    }
    let _ = std::fs::remove_dir_all(&root);
    None
}

/// Runs `script` (a tests/ file) with node from inside `dir`, so that its imports resolve there.
pub fn node(dir: &std::path::Path, script: &str, env: &[(&str, String)]) -> std::process::Output {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let target = dir.join(script);
    std::fs::copy(&source, &target).expect("copy the script");
    let mut cmd = Command::new("node");
    cmd.arg(&target).current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("node runs")
}
