//! The `kiln` command line as a user runs it.

use std::process::Command;

fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

#[test]
fn kiln_run_prints_the_output_and_exits_with_the_programs_code() {
    let dir = std::env::temp_dir().join(format!("kiln-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("prog.py");
    std::fs::write(
        &file,
        "import sys\nprint('out', sys.argv[1:], input())\nsys.exit(7)\n",
    )
    .unwrap();
    let input = dir.join("in.txt");
    std::fs::write(&input, "typed\n").unwrap();
    let out = kiln()
        .arg("run")
        .arg(&file)
        .arg("--stdin")
        .arg(&input)
        .args(["--", "a", "b"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "out ['a', 'b'] typed\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(7));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kiln_run_refuses_a_file_whose_language_it_cannot_tell() {
    let file = std::env::temp_dir().join(format!("kiln-cli-{}.unknownext", std::process::id()));
    std::fs::write(&file, "x").unwrap();
    let out = kiln().arg("run").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--language"));
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn an_unknown_mode_is_refused_with_the_choices_before_anything_starts() {
    let dir = std::env::temp_dir().join(format!("kiln-cli-modes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("kiln.toml");
    std::fs::write(&config, "pods = \"docker\"\n").unwrap();
    let cases: [(Vec<&str>, &str); 4] = [
        (
            vec!["serve", "--queue", "rabbitmq"],
            "queue must be embedded or kafka, not \"rabbitmq\"",
        ),
        (
            vec!["scheduler", "--pods", "docker"],
            "pods must be local or kubernetes, not \"docker\"",
        ),
        (
            vec!["--log-format", "yaml", "serve"],
            "log_format must be text or json, not \"yaml\"",
        ),
        (
            vec!["--config", config.to_str().unwrap(), "serve"],
            "pods must be local or kubernetes, not \"docker\"",
        ),
    ];
    for (args, expected) in cases {
        let out = kiln()
            .args(&args)
            .env("KILN_DATA_DIR", dir.join("data"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    assert!(
        !dir.join("data").exists(),
        "a refused start made its data dir"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kiln_runtimes_lists_each_language_with_its_state() {
    let out = kiln().arg("runtimes").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for lang in [
        "python",
        "c",
        "cpp",
        "rust",
        "go",
        "java",
        "javascript",
        "bash",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(lang)),
            "{lang} missing:\n{text}"
        );
    }
}

#[test]
fn kiln_run_works_unprivileged_with_user_namespaces() {
    if unsafe { libc::geteuid() } != 0 {
        return; // already unprivileged: the other tests cover it
    }
    let dir = std::env::temp_dir().join(format!("kiln-cli-user-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("who.py");
    std::fs::write(&file, "import os\nprint('uid', os.getuid())\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    use std::os::unix::process::CommandExt;
    let out = kiln()
        .arg("run")
        .arg(&file)
        .env("HOME", &dir)
        .env("TMPDIR", &dir)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "uid 0\n",
        "mapped root inside its own user namespace: {stderr}"
    );
    assert!(out.status.success(), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
