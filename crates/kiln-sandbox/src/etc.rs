//! What a pod sees of `/etc`: an allow-list, never the host's whole directory. The host's `/etc`
//! holds other services' configuration and credentials (Kiln's own config with its token among
//! them), the list of host users and the host's name; a deny-list of them can never be complete.
//! So a pod's `/etc` is a directory Kiln makes: a few files written for the pod (users, hosts,
//! name service), plus the host entries toolchains really read, bound read-only one by one. The
//! list is configuration (`pod_etc`) that languages extend (`etc` in the registry).

use std::path::{Path, PathBuf};

/// Host entries every pod sees: the dynamic linker's cache and configuration (every dynamically
/// linked program reads them), the alternatives links that toolchains resolve through (`cc` for
/// rustc's linker, `java`), and the time zone.
pub const DEFAULT_POD_ETC: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "localtime",
];

/// The files Kiln writes into every pod's `/etc` instead of binding the host's.
pub const SYNTHESIZED: &[&str] = &[
    "passwd",
    "group",
    "hosts",
    "hostname",
    "nsswitch.conf",
    "resolv.conf",
];

/// Checks one `pod_etc` entry: a path below /etc, `*` allowed within a component.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    let bad = pattern.is_empty()
        || pattern.starts_with('/')
        || pattern
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(format!(
            "{pattern:?} is not a path below /etc (write e.g. \"ssl/certs\" or \"java-*\")"
        ));
    }
    Ok(())
}

/// The host paths that `patterns` name below `etc_root` (normally `/etc`), globs expanded,
/// sorted, without duplicates and without the synthesized files. Patterns that match nothing on
/// this host are skipped: a toolchain's configuration may simply not be installed.
pub fn resolve(etc_root: &Path, patterns: &[String]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for pattern in patterns {
        let mut paths = vec![etc_root.to_path_buf()];
        for component in pattern.split('/') {
            paths = paths
                .iter()
                .flat_map(|dir| matching(dir, component))
                .collect();
        }
        found.extend(paths);
    }
    found.retain(|p| {
        p.strip_prefix(etc_root)
            .is_ok_and(|rel| !SYNTHESIZED.iter().any(|s| rel == Path::new(s)))
    });
    found.sort();
    found.dedup();
    found
}

/// Entries of `dir` named by `component` (which may hold `*`).
fn matching(dir: &Path, component: &str) -> Vec<PathBuf> {
    if !component.contains('*') {
        let path = dir.join(component);
        return if path.symlink_metadata().is_ok() {
            vec![path]
        } else {
            Vec::new()
        };
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| glob_matches(component, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// `*` matches any run of characters; everything else matches itself.
fn glob_matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return pattern == name;
    }
    if !name.starts_with(first) || name.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    if !name.ends_with(last) {
        return false;
    }
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

/// The synthesized files' contents: root and the program's user only, localhost only, and name
/// service from files (there is no network to ask).
pub fn synthesized_files(
    sandbox_user: Option<(u32, u32)>,
    hostname: &str,
) -> Vec<(&'static str, String)> {
    let mut passwd = String::from("root:x:0:0:root:/root:/usr/sbin/nologin\n");
    let mut group = String::from("root:x:0:\n");
    if let Some((uid, gid)) = sandbox_user.filter(|(uid, _)| *uid != 0) {
        let name = if uid == 65534 { "nobody" } else { "sandbox" };
        let group_name = if gid == 65534 { "nogroup" } else { "sandbox" };
        passwd.push_str(&format!(
            "{name}:x:{uid}:{gid}:{name}:/tmp:/usr/sbin/nologin\n"
        ));
        group.push_str(&format!("{group_name}:x:{gid}:\n"));
    }
    vec![
        ("passwd", passwd),
        ("group", group),
        (
            "hosts",
            format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost\n"),
        ),
        ("hostname", format!("{hostname}\n")),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nshadow: files\nhosts: files\nnetworks: files\nprotocols: files\nservices: files\n".into(),
        ),
        // No network inside a pod: no resolver to name.
        ("resolv.conf", String::new()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_within_one_component() {
        assert!(glob_matches("java-*-openjdk", "java-17-openjdk"));
        assert!(glob_matches("java-*", "java-17-openjdk"));
        assert!(glob_matches("*.conf", "ld.so.conf"));
        assert!(!glob_matches("java-*-openjdk", "java-17-openjdk-amd64"));
        assert!(!glob_matches("ld.so.conf", "ld.so.conf.d"));
        assert!(glob_matches("a*b*c", "a-b-c"));
        assert!(!glob_matches("a*b*c", "a-c-b"));
    }

    #[test]
    fn patterns_resolve_to_existing_host_paths_and_never_to_synthesized_ones() {
        let root = std::env::temp_dir().join(format!("kiln-etc-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("java-17-openjdk/security")).unwrap();
        std::fs::create_dir_all(root.join("ld.so.conf.d")).unwrap();
        for f in ["ld.so.cache", "passwd", "kiln.toml"] {
            std::fs::write(root.join(f), "x").unwrap();
        }
        let patterns: Vec<String> = [
            "ld.so.cache",
            "ld.so.conf.d",
            "java-*/security",
            "passwd",
            "absent",
        ]
        .map(String::from)
        .to_vec();
        let got = resolve(&root, &patterns);
        assert_eq!(
            got,
            vec![
                root.join("java-17-openjdk/security"),
                root.join("ld.so.cache"),
                root.join("ld.so.conf.d"),
            ]
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn patterns_that_leave_etc_are_refused() {
        for bad in ["", "/etc/passwd", "../root", "a/../../b", "a//b"] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
        assert!(check_pattern("ssl/certs").is_ok());
    }

    #[test]
    fn pods_list_only_root_and_their_own_user() {
        let files = synthesized_files(Some((65534, 65534)), "kiln");
        let passwd = &files.iter().find(|(n, _)| *n == "passwd").unwrap().1;
        let users: Vec<&str> = passwd
            .lines()
            .map(|l| l.split(':').next().unwrap())
            .collect();
        assert_eq!(users, ["root", "nobody"]);
    }
}
