//! Every shipped language runs its test program (tests/languages/<name>.<ext>) through the HTTP
//! API of a real `kiln serve`: it reads a line from stdin, writes "hello <line>" to stdout and
//! "err" to stderr, and exits 3. Each compiled language also gets a program that does not compile
//! (tests/languages/<name>.bad.<ext>). Languages whose toolchain this host lacks are named as
//! skipped; under CI (where `.ci/run` installs them all) a missing one fails.

#[path = "common/server.rs"]
mod server;

use std::path::{Path, PathBuf};

use kiln::languages::Registry;
use serde_json::{json, Value};
use server::Server;

fn programs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/languages")
}

/// The test program of `language` (and its compile-error twin when there is one).
fn files(language: &str) -> (Option<PathBuf>, Option<PathBuf>) {
    let mut good = None;
    let mut bad = None;
    for entry in std::fs::read_dir(programs()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{language}.bad.")) {
            bad = Some(entry.path());
        } else if name.split_once('.').is_some_and(|(l, _)| l == language) {
            good = Some(entry.path());
        }
    }
    (good, bad)
}

struct Expect {
    stdin: &'static str,
    stdout: &'static str,
    stderr_contains: &'static str,
    exit_code: i64,
}

fn expect(language: &str) -> Expect {
    match language {
        // SQL against an in-memory database reads no stdin; a failing statement ends it with 1.
        "sqlite" => Expect {
            stdin: "",
            stdout: "hello kiln\n",
            stderr_contains: "no such table",
            exit_code: 1,
        },
        // yabasic writes to stderr only through its own error messages.
        "basic" => Expect {
            stdin: "kiln\n",
            stdout: "hello kiln\n",
            stderr_contains: "",
            exit_code: 3,
        },
        _ => Expect {
            stdin: "kiln\n",
            stdout: "hello kiln\n",
            stderr_contains: "err\n",
            exit_code: 3,
        },
    }
}

fn check(server: &Server, language: &str, compiled: bool) -> Result<(), String> {
    let (good, bad) = files(language);
    let good = good.ok_or(format!("{language}: no test program in tests/languages/"))?;
    let e = expect(language);
    let source = std::fs::read_to_string(&good).unwrap();
    let (code, r) = server.post(
        "/v1/submissions?wait=true",
        &json!({"language": language, "source": source, "stdin": e.stdin}),
    );
    let fail = |what: &str, r: &Value| Err(format!("{language}: {what}: {r}"));
    if code != 200 {
        return fail(&format!("HTTP {code}"), &r);
    }
    if r["status"] != "runtime_error" || r["exit_code"] != e.exit_code {
        return fail(
            &format!("expected runtime_error with exit code {}", e.exit_code),
            &r,
        );
    }
    if r["stdout"] != e.stdout {
        return fail("wrong stdout", &r);
    }
    let stderr = r["stderr"].as_str().unwrap_or("");
    let stderr_ok = if e.stderr_contains == "err\n" || e.stderr_contains.is_empty() {
        stderr == e.stderr_contains
    } else {
        stderr.contains(e.stderr_contains)
    };
    if !stderr_ok {
        return fail("wrong stderr", &r);
    }
    if compiled {
        let bad = bad.ok_or(format!("{language}: compiled, but no .bad. program"))?;
        let (_, r) = server.post(
            "/v1/submissions?wait=true",
            &json!({"language": language, "source": std::fs::read_to_string(bad).unwrap()}),
        );
        if r["status"] != "compile_error" || r["compile_output"].as_str().unwrap_or("").is_empty() {
            return fail(
                "the bad program did not end as compile_error with output",
                &r,
            );
        }
    }
    Ok(())
}

#[test]
fn every_language_runs_its_test_program_through_the_api() {
    let registry = Registry::load(None).unwrap();
    let server = Server::start(
        "languages",
        &[("KILN_LIMITS__MAXIMUM__WALL_TIME_MS", "120000")],
    );
    let mut skipped: Vec<String> = registry
        .unavailable
        .iter()
        .map(|(n, why)| format!("{n} ({why})"))
        .collect();
    skipped.sort();
    if !skipped.is_empty() {
        eprintln!(
            "languages skipped (toolchain not on this host): {}",
            skipped.join("; ")
        );
        assert!(
            std::env::var("CI").is_err(),
            "CI installs every toolchain (scripts/runtimes install --all), yet: {skipped:?}"
        );
    }
    let languages: Vec<(String, bool)> = registry
        .available
        .iter()
        .map(|l| (l.name.clone(), l.compile.is_some()))
        .collect();
    // Four at a time: compilers are heavy on two cores.
    let queue = std::sync::Mutex::new(languages.iter());
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut failed = Vec::new();
                    loop {
                        let next = queue.lock().unwrap().next();
                        let Some((language, compiled)) = next else {
                            return failed;
                        };
                        if let Err(e) = check(&server, language, *compiled) {
                            failed.push(e);
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    eprintln!(
        "languages tested: {}",
        languages
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_shipped_language_has_a_test_program_and_is_listed_once() {
    let r = Registry::load(None).unwrap();
    let mut names: Vec<&str> = r
        .available
        .iter()
        .map(|l| l.name.as_str())
        .chain(r.unavailable.iter().map(|(n, _)| n.as_str()))
        .collect();
    names.sort();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "a language is listed twice: {names:?}");
    assert!(names.len() >= 35, "{} languages: {names:?}", names.len());
    for n in names {
        assert!(
            files(n).0.is_some(),
            "{n} has no program in tests/languages/"
        );
    }
}

#[test]
fn java_runs_whatever_its_public_class_is_called() {
    let registry = Registry::load(None).unwrap();
    if registry.find("java", None).is_err() {
        assert!(std::env::var("CI").is_err(), "CI has Java");
        return;
    }
    let server = Server::start("java-class", &[]);
    let source = "// A comment: public class NotThis {}\nimport java.util.*;\n\npublic final class HelloWorld {\n    public static void main(String[] args) {\n        String s = \"public class Nope\";\n        System.out.println(\"hello from \" + HelloWorld.class.getSimpleName());\n    }\n}\n";
    let (_, r) = server.post(
        "/v1/submissions?wait=true",
        &json!({"language": "java", "source": source}),
    );
    assert_eq!(r["status"], "accepted", "{r}");
    assert_eq!(r["stdout"], "hello from HelloWorld\n");
    // Without a public class the default Main is kept.
    let (_, r) = server.post(
        "/v1/submissions?wait=true",
        &json!({"language": "java", "source": "class Main { public static void main(String[] a) { System.out.println(1); } }"}),
    );
    assert_eq!(r["status"], "accepted", "{r}");
}
