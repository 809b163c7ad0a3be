//! `scripts/runtimes` on a machine that never had TypeScript: it must install `tsc` with the
//! machine's own npm (a fresh machine of this kind has Node.js and npm, but not from Debian, so
//! asking Debian for npm conflicts and fails), and a toolchain it cannot get is named without
//! stopping the others. The script runs with a PATH of only the tools it needs, so whatever
//! this machine installed earlier (a global `tsc`) is out of its sight.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/runtimes")
}

/// A folder of links to the commands the script and npm use, and nothing else.
fn bare_path(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let tools = [
        "bash",
        "sh",
        "env",
        "node",
        "npm",
        "date",
        "tail",
        "head",
        "cut",
        "grep",
        "sed",
        "mktemp",
        "rm",
        "ln",
        "chmod",
        "cat",
        "dirname",
        "basename",
        "uname",
        "dpkg-query",
        "apt-get",
    ];
    for tool in tools {
        let found = ["/usr/local/bin", "/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists());
        if let Some(path) = found.filter(|_| !bin.join(tool).exists()) {
            let target = std::fs::canonicalize(&path).unwrap_or(path);
            symlink(target, bin.join(tool)).unwrap();
        }
    }
    bin
}

fn run(dir: &Path, args: &[&str]) -> Output {
    let bin = bare_path(dir);
    let prefix = dir.join("npm-global");
    // The rest of the environment stays: the machine's npm settings (its CA file, a proxy) are
    // what a fresh machine has too.
    Command::new(bin.join("bash"))
        .arg(script())
        .args(args)
        .env(
            "PATH",
            format!("{}:{}", prefix.join("bin").display(), bin.display()),
        )
        .env("NPM_CONFIG_PREFIX", &prefix)
        .output()
        .expect("scripts/runtimes runs")
}

#[test]
fn typescript_installs_with_the_machines_npm_where_tsc_never_was() {
    let dir = std::env::temp_dir().join(format!("kiln-runtimes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = run(&dir, &["install", "typescript"]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "scripts/runtimes install typescript failed:\n{said}"
    );
    assert!(
        !said.contains("Debian"),
        "nothing is asked of Debian for TypeScript here:\n{said}"
    );
    assert!(said.contains("installed: typescript (npm)"), "{said}");
    let tsc = dir.join("npm-global/bin/tsc");
    let version = Command::new(&tsc)
        .arg("--version")
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", dir.join("bin").display()),
        )
        .output()
        .expect("tsc runs");
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("Version 5."),
        "{version:?}"
    );
    // A second run finds it and installs nothing.
    let again = run(&dir, &["install", "typescript"]);
    let said = String::from_utf8_lossy(&again.stderr).into_owned();
    assert!(
        again.status.success() && said.contains("installed: nothing new"),
        "{said}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_toolchain_that_cannot_be_had_is_named_and_fails_the_run() {
    let dir = std::env::temp_dir().join(format!("kiln-runtimes-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // bash is there already; "cobol2" is no language of Kiln's.
    let out = run(&dir, &["install", "bash", "cobol2"]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("could not get: cobol2 (no such language)"),
        "{said}"
    );
    assert!(
        said.contains("installed: nothing new"),
        "bash was found: {said}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
