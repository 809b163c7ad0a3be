//! Every shipped language runs its test program (tests/languages/<name>.<ext>) through the HTTP
//! API of a real `kiln serve`: it reads a line from stdin, writes "hello <line>" to stdout and
//! "err" to stderr, and exits 3. It runs twice: as a bare `source` (the language's default entry
//! name) and as a file named `solution.<ext>`, as Piston's clients name theirs. Each compiled
//! language also gets a program that does not compile (tests/languages/<name>.bad.<ext>).
//! Languages whose toolchain this host lacks are named as skipped; under CI (where `.ci/run`
//! installs them all) a missing one fails.

use crate::server;

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
    let source = std::fs::read_to_string(&good).unwrap();
    check_run(server, language, json!({"source": source}))?;
    // Judge0's multi-file program is its archive's `run` script, by name.
    if language != "multi-file" {
        let ext = good.extension().unwrap().to_string_lossy();
        let name = format!("solution.{ext}");
        check_run(
            server,
            language,
            json!({"files": [{"name": name, "content": source}]}),
        )
        .map_err(|e| format!("{e} (as {name})"))?;
    }
    let fail = |what: &str, r: &Value| Err(format!("{language}: {what}: {r}"));
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

/// Runs the test program of `language`, given as `program` (`source` or `files`), and checks
/// its status, exit code, stdout and stderr.
fn check_run(server: &Server, language: &str, program: Value) -> Result<(), String> {
    let e = expect(language);
    // This test is about what each language does, not how fast: a toolchain's first start after
    // the suite's builds have pushed it out of the page cache reads it from disk (Octave: 10 s
    // alone on this machine, over 20 s beside the suite), so the wall limit is the maximum.
    let mut body =
        json!({"language": language, "stdin": e.stdin, "limits": {"wall_time_ms": 60000}});
    body.as_object_mut()
        .unwrap()
        .extend(program.as_object().unwrap().clone());
    let (code, r) = server.post("/v1/submissions?wait=true", &body);
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

/// A server for the tests of one language, or None (skipped) when this host lacks it.
fn server_for(language: &str, name: &str) -> Option<Server> {
    if Registry::load(None).unwrap().find(language, None).is_err() {
        assert!(std::env::var("CI").is_err(), "CI has {language}");
        return None;
    }
    Some(Server::start(name, &[]))
}

#[test]
fn java_runs_a_public_class_named_unlike_its_file_as_piston_does() {
    let Some(server) = server_for("java", "java-misnamed") else {
        return;
    };
    // javac refuses this file; Java's source launcher (Piston's way) runs it.
    let source = "import java.util.Scanner;\n\npublic class HelloWorld {\n    public static void main(String[] args) {\n        String name = new Scanner(System.in).nextLine();\n        System.out.println(\"hello \" + name + \" from \" + HelloWorld.class.getSimpleName() + \" \" + String.join(\",\", args));\n    }\n}\n";
    let (_, r) = server.post(
        "/v1/submissions?wait=true",
        &json!({"language": "java", "files": [{"name": "test.java", "content": source}],
                "stdin": "kiln\n", "args": ["a", "b"]}),
    );
    assert_eq!(r["status"], "accepted", "{r}");
    assert_eq!(r["stdout"], "hello kiln from HelloWorld a,b\n");
    // Named after its class, it is compiled by javac as before; a broken one is a compile error.
    let (_, r) = server.post(
        "/v1/submissions?wait=true",
        &json!({"language": "java", "files": [{"name": "HelloWorld.java", "content": source}],
                "stdin": "kiln\n"}),
    );
    assert_eq!(r["stdout"], "hello kiln from HelloWorld \n", "{r}");
    let (_, r) = server.post(
        "/v1/submissions?wait=true",
        &json!({"language": "java", "files": [{"name": "Broken.java",
                "content": "public class Broken { void f() { int x = } }"}]}),
    );
    assert_eq!(r["status"], "compile_error", "{r}");
}

#[test]
fn erlang_runs_an_escript_as_well_as_a_module() {
    let Some(server) = server_for("erlang", "erlang-escript") else {
        return;
    };
    let run = |name: &str, source: &str| {
        let (_, r) = server.post(
            "/v1/submissions?wait=true",
            &json!({"language": "erlang", "files": [{"name": name, "content": source}],
                    "stdin": "kiln\n", "args": ["x", "y"]}),
        );
        r
    };
    // No -module, main/1: an escript, whose first line is code (escript alone would skip it).
    let escript = "main(Args) ->\n    Name = string:trim(io:get_line(\"\")),\n    io:format(\"hello ~s ~p~n\", [Name, Args]),\n    halt(3).\n";
    let r = run("test.erl", escript);
    assert_eq!(r["status"], "runtime_error", "{r}");
    assert_eq!(r["exit_code"], 3, "{r}");
    assert_eq!(r["stdout"], "hello kiln [\"x\",\"y\"]\n", "{r}");
    // As Piston's Erlang programs are written: a header line, or a module exporting main/1.
    let r = run("test.erl", &format!("%% -*- erlang -*-\n{escript}"));
    assert_eq!(r["stdout"], "hello kiln [\"x\",\"y\"]\n", "{r}");
    let r = run(
        "prog.erl",
        &format!("-module(test).\n-export([main/1]).\n{escript}"),
    );
    assert_eq!(r["stdout"], "hello kiln [\"x\",\"y\"]\n", "{r}");
    let r = run(
        "test.erl",
        "#!/usr/bin/env escript\nmain(_) -> io:format(\"shebang~n\").\n",
    );
    assert_eq!(r["stdout"], "shebang\n", "{r}");
    // A broken escript is a compile error, with the line of the file it is on.
    let r = run("test.erl", "main(_) ->\n    io:format(\"x\"\n");
    assert_eq!(r["status"], "compile_error", "{r}");
    assert!(
        r["compile_output"]
            .as_str()
            .unwrap_or("")
            .contains("test.erl:"),
        "{r}"
    );
    // A module named unlike its file still runs its main/0, with the args as plain arguments.
    let module = "-module(greeter).\n-export([main/0]).\nmain() -> io:format(\"module ~p~n\", [init:get_plain_arguments()]).\n";
    let r = run("solution.erl", module);
    assert_eq!(r["status"], "accepted", "{r}");
    assert_eq!(r["stdout"], "module [\"x\",\"y\"]\n", "{r}");
}

#[test]
fn a_multi_file_submission_keeps_every_name() {
    let Some(server) = server_for("python", "multi-file-names") else {
        return;
    };
    let (_, r) = server.post(
        "/v1/submissions?wait=true",
        &json!({"language": "python", "files": [
            {"name": "app.py", "content": "import os, sys\nsys.path.insert(0, 'lib')\nimport helper\nprint(os.path.basename(__file__), helper.greet(open('data/name.txt').read().strip()))\n"},
            {"name": "lib/helper.py", "content": "def greet(n):\n    return 'hello ' + n\n"},
            {"name": "data/name.txt", "content": "kiln\n"},
        ]}),
    );
    assert_eq!(r["status"], "accepted", "{r}");
    assert_eq!(r["stdout"], "app.py hello kiln\n", "{r}");
    if Registry::load(None).unwrap().find("c", None).is_err() {
        return;
    }
    let (_, r) = server.post(
        "/v1/submissions?wait=true",
        &json!({"language": "c", "files": [
            {"name": "prog.c", "content": "#include <stdio.h>\n#include \"include/greet.h\"\nint main(void) { puts(GREETING \" \" __FILE__); return 0; }\n"},
            {"name": "include/greet.h", "content": "#define GREETING \"hello\"\n"},
        ]}),
    );
    assert_eq!(r["status"], "accepted", "{r}");
    assert_eq!(r["stdout"], "hello prog.c\n", "{r}");
}

#[test]
fn a_file_named_like_a_build_output_or_an_option_is_refused() {
    let Some(server) = server_for("c", "refused-names") else {
        return;
    };
    let (code, r) = server.post(
        "/v1/submissions?wait=true",
        &json!({"language": "c", "files": [
            {"name": "prog.c", "content": "int main(void) { return 0; }"},
            {"name": "main", "content": "data"},
        ]}),
    );
    assert_eq!(code, 422, "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap_or("")
            .contains("compile step makes"),
        "{r}"
    );
    let (code, r) = server.post(
        "/v1/submissions?wait=true",
        &json!({"language": "c", "files": [{"name": "-o.c", "content": "int main(void) { return 0; }"}]}),
    );
    assert_eq!(code, 422, "{r}");
    assert!(r["error"].as_str().unwrap_or("").contains("option"), "{r}");
}
