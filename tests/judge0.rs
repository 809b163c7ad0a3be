//! Judge0 CE's API served by a real `kiln serve`: every endpoint in the shapes Judge0's clients
//! read, its statuses told apart by real programs, its 4xx shapes for bad input, callbacks as
//! Judge0 sends them, multi-file archives, and the official Python SDK from PyPI run unchanged
//! but for its endpoint.

use crate::server;
use crate::tools;

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use server::{catch_one_request, Server};

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn unb64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("a base64 string"))
        .unwrap()
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

/// Runs one submission with `?wait=true&fields=*` and returns it.
fn run(s: &Server, body: Value) -> Value {
    let (code, r) = s.post("/judge0/submissions?wait=true&fields=*", &body);
    assert_eq!(code, 201, "{r}");
    r
}

fn status_of(r: &Value) -> u64 {
    r["status"]["id"].as_u64().unwrap_or(0)
}

#[test]
fn judge0_endpoints_answer_in_judge0_shapes() {
    let s = Server::start(
        "judge0-endpoints",
        &[
            ("KILN_COMPAT__JUDGE0_AT_ROOT", "true"),
            ("KILN_AUTH_TOKEN", "sesame"),
        ],
    );
    let get = |path: &str, token: Option<&str>| -> (u16, Value) {
        let mut r = ureq::get(&s.url(path));
        if let Some(t) = token {
            r = r.set("X-Auth-Token", t);
        }
        match r.call() {
            Ok(resp) => (resp.status(), resp.into_json().unwrap_or(Value::Null)),
            Err(ureq::Error::Status(c, resp)) => (c, resp.into_json().unwrap_or(Value::Null)),
            Err(e) => panic!("{e}"),
        }
    };
    let tok = Some("sesame");
    // Judge0's auth header; without it, 401.
    assert_eq!(get("/judge0/about", None).0, 401);
    assert_eq!(get("/judge0/about", Some("wrong")).0, 401);
    for prefix in ["/judge0", ""] {
        let (code, about) = get(&format!("{prefix}/about"), tok);
        assert_eq!(code, 200, "{prefix}: {about}");
        assert_eq!(
            about["version"], "1.13.1",
            "clients pick their id table by it"
        );
    }

    let (_, langs) = get("/judge0/languages", tok);
    let ids: Vec<u64> = langs
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_u64().unwrap())
        .collect();
    for id in [45, 46, 50, 52, 54, 62, 63, 71, 73, 74, 82, 89] {
        assert!(ids.contains(&id), "id {id} missing from {ids:?}");
    }
    for id in [43, 44, 70, 83, 84, 87] {
        assert!(!ids.contains(&id), "id {id} has no toolchain yet is listed");
    }
    let python = langs
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == 71)
        .unwrap();
    assert!(
        python["name"].as_str().unwrap().starts_with("Python (3."),
        "{python}"
    );

    let (_, all) = get("/judge0/languages/all", tok);
    let swift = all
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == 83)
        .unwrap();
    assert_eq!(swift["is_archived"], true);
    let (code, c) = get("/judge0/languages/50", tok);
    assert_eq!(code, 200);
    assert_eq!(c["is_archived"], false);
    assert!(c["compile_cmd"].as_str().unwrap().contains("gcc"), "{c}");
    assert!(c["source_file"].as_str().unwrap().ends_with(".c"), "{c}");
    let (code, e) = get("/judge0/languages/83", tok);
    assert_eq!(code, 404);
    assert!(e["error"].as_str().unwrap().contains("Swift"), "{e}");
    assert_eq!(get("/judge0/languages/9999", tok).0, 404);

    let (_, statuses) = get("/judge0/statuses", tok);
    let statuses = statuses.as_array().unwrap();
    assert_eq!(statuses.len(), 14);
    assert_eq!(
        statuses[6],
        json!({"id": 7, "description": "Runtime Error (SIGSEGV)"})
    );

    let (_, config) = get("/judge0/config_info", tok);
    for key in [
        "max_cpu_time_limit",
        "max_memory_limit",
        "max_submission_batch_size",
        "enable_batched_submissions",
        "allow_enable_network",
        "use_docs_as_homepage",
    ] {
        assert!(
            config.get(key).is_some(),
            "config_info lacks {key}: {config}"
        );
    }
    assert_eq!(config["enable_submission_delete"], false);
    let (_, workers) = get("/judge0/workers", tok);
    assert!(workers[0]["available"].as_u64().unwrap() > 0, "{workers}");
    let (_, system) = get("/judge0/system_info", tok);
    assert!(system["CPU(s)"].is_string(), "{system}");

    // A submission through the root mount, with Judge0's auth header.
    let resp = ureq::post(&s.url("/submissions?wait=true"))
        .set("X-Auth-Token", "sesame")
        .send_json(json!({"language_id": 46, "source_code": "echo root"}))
        .unwrap();
    assert_eq!(resp.status(), 201);
    let r: Value = resp.into_json().unwrap();
    assert_eq!(r["stdout"], "root\n");
}

#[test]
fn statuses_fields_and_encodings_are_judge0s() {
    let s = Server::start("judge0-statuses", &[]);

    // Plain text: a Python program with stdin and arguments, exiting 2.
    let r = run(
        &s,
        json!({"language_id": 71, "stdin": "kiln", "command_line_arguments": "a 'b c'",
               "source_code": "import sys\nprint(input(), sys.argv[1:])\nprint('e', file=sys.stderr)\nsys.exit(2)"}),
    );
    assert_eq!(status_of(&r), 11, "NZEC: {r}");
    assert_eq!(r["status"]["description"], "Runtime Error (NZEC)");
    assert_eq!(r["stdout"], "kiln ['a', 'b c']\n");
    assert_eq!(r["stderr"], "e\n");
    assert_eq!(r["exit_code"], 2);
    assert_eq!(r["language_id"], 71);
    let time: f64 = r["time"].as_str().unwrap().parse().unwrap();
    assert!((0.0..5.0).contains(&time), "{r}");
    assert!(r["wall_time"].as_str().unwrap().parse::<f64>().is_ok());
    assert!(r["memory"].as_u64().unwrap() > 0, "memory in KB: {r}");
    assert!(r["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(r["finished_at"].as_str().unwrap().ends_with('Z'));

    // base64 both ways.
    let (code, r) = s.post(
        "/judge0/submissions?base64_encoded=true&wait=true",
        &json!({"language_id": 71, "source_code": b64(b"print(input()[::-1])"), "stdin": b64(b"kiln")}),
    );
    assert_eq!(code, 201);
    assert_eq!(unb64(&r["stdout"]), b"nlik\n");
    // Judge0's default fields when none are asked for.
    assert_eq!(
        keys(&r),
        [
            "compile_output",
            "memory",
            "message",
            "status",
            "stderr",
            "stdout",
            "time",
            "token"
        ]
    );
    let (code, r) = s.post(
        "/judge0/submissions?wait=true&fields=stdout,exit_code",
        &json!({"language_id": 46, "source_code": "echo hi; exit 4"}),
    );
    assert_eq!(code, 201);
    assert_eq!(r, json!({"stdout": "hi\n", "exit_code": 4}));
    let (code, e) = s.post(
        "/judge0/submissions?wait=true&fields=stdout,nonsense",
        &json!({"language_id": 46, "source_code": "echo hi"}),
    );
    assert_eq!(code, 400);
    assert_eq!(e["error"], "invalid fields: [nonsense]");

    // Expected output decides Accepted against Wrong Answer.
    let judged = |expected: &str| {
        status_of(&run(
            &s,
            json!({"language_id": 71, "source_code": "print(6 * 7)", "expected_output": expected}),
        ))
    };
    assert_eq!(judged("42\n"), 3);
    assert_eq!(judged("43"), 4);

    // Runtime errors told apart by signal, as Judge0 does.
    let c = |body: &str| {
        run(
            &s,
            json!({"language_id": 50, "source_code": format!("#include <stdio.h>\n#include <stdlib.h>\n#include <signal.h>\n#include <unistd.h>\nint main(void) {{ volatile int z = 0; {body} return 0; }}")}),
        )
    };
    assert_eq!(status_of(&c("int *p = 0; *p = 1;")), 7, "SIGSEGV");
    assert_eq!(status_of(&c("printf(\"%d\", 10 / z);")), 9, "SIGFPE");
    assert_eq!(status_of(&c("abort();")), 10, "SIGABRT");
    assert_eq!(
        status_of(&c("kill(getpid(), SIGUSR1); pause();")),
        12,
        "Other"
    );
    let r = run(
        &s,
        json!({"language_id": 50, "max_file_size": 64,
               "source_code": "#include <stdio.h>\nint main(void) { FILE *f = fopen(\"big\", \"w\"); char b[4096] = {0}; for (int i = 0; i < 1000; i++) fwrite(b, 1, sizeof b, f); fclose(f); return 0; }"}),
    );
    assert_eq!(status_of(&r), 8, "SIGXFSZ past max_file_size: {r}");
    assert_eq!(r["exit_signal"], 25);
    let r = run(&s, json!({"language_id": 50, "source_code": "int main( {"}));
    assert_eq!(status_of(&r), 6, "{r}");
    assert!(
        r["compile_output"].as_str().unwrap().contains("error"),
        "{r}"
    );
    let r = run(
        &s,
        json!({"language_id": 71, "cpu_time_limit": 0.5, "source_code": "while True: pass"}),
    );
    assert_eq!(status_of(&r), 5, "{r}");

    // Compiler options reach the compiler; what is not a flag is refused.
    let r = run(
        &s,
        json!({"language_id": 50, "compiler_options": "-DVALUE=7 -O2",
               "source_code": "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", VALUE); return 0; }"}),
    );
    assert_eq!(r["stdout"], "7\n", "{r}");
    let (code, e) = s.post(
        "/judge0/submissions",
        &json!({"language_id": 50, "compiler_options": "-O2; rm -rf /", "source_code": "int main(){}"}),
    );
    assert_eq!(code, 422);
    assert!(
        e["compiler_options"][0]
            .as_str()
            .unwrap()
            .contains("not a flag"),
        "{e}"
    );
    let r = run(
        &s,
        json!({"language_id": 71, "redirect_stderr_to_stdout": true,
               "source_code": "import sys\nprint('a', flush=True)\nprint('b', file=sys.stderr, flush=True)\nprint('c')"}),
    );
    assert_eq!(r["stdout"], "a\nb\nc\n", "{r}");

    // Output that is not UTF-8: Judge0's 400 without base64, the bytes with it.
    let (_, r) = s.post(
        "/judge0/submissions",
        &json!({"language_id": 71, "source_code": "import sys\nsys.stdout.buffer.write(b'\\xff\\xfe')"}),
    );
    let token = r["token"].as_str().unwrap().to_string();
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, v) = s.get(&format!("/judge0/submissions/{token}?base64_encoded=true"));
        assert_eq!(code, 200);
        if status_of(&v) > 2 {
            assert_eq!(unb64(&v["stdout"]), [0xff, 0xfe]);
            break;
        }
        assert!(Instant::now() < until, "{v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, e) = s.get(&format!("/judge0/submissions/{token}"));
    assert_eq!(code, 400);
    assert!(
        e["error"].as_str().unwrap().contains("base64_encoded=true"),
        "{e}"
    );

    // Deletion is off, as in Judge0's default configuration; unknown tokens are 404.
    let resp = ureq::delete(&s.url(&format!("/judge0/submissions/{token}"))).call();
    match resp {
        Err(ureq::Error::Status(400, r)) => {
            assert_eq!(
                r.into_json::<Value>().unwrap()["error"],
                "delete not allowed"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.get("/judge0/submissions/no-such-token").0, 404);
}

#[test]
fn bad_input_gets_judge0s_errors_and_runs_nothing() {
    let s = Server::start("judge0-bad-input", &[]);
    let refused = |body: Value| -> Value {
        let (code, e) = s.post("/judge0/submissions", &body);
        assert_eq!(code, 422, "{body} -> {e}");
        e
    };
    let e = refused(json!({"source_code": "print(1)"}));
    assert_eq!(e, json!({"language_id": ["can't be blank"]}));
    let e = refused(json!({"language_id": 71}));
    assert_eq!(e, json!({"source_code": ["can't be blank"]}));
    let e = refused(json!({"language_id": 9999, "source_code": "x"}));
    assert_eq!(e["language_id"][0], "language with id 9999 doesn't exist");
    let e = refused(json!({"language_id": 83, "source_code": "print(1)"}));
    assert!(
        e["language_id"][0]
            .as_str()
            .unwrap()
            .contains("not available"),
        "{e}"
    );
    let e = refused(
        json!({"language_id": 71, "source_code": "x", "cpu_time_limit": 1000, "memory_limit": "lots", "max_processes_and_or_threads": 0}),
    );
    assert!(
        e["cpu_time_limit"][0]
            .as_str()
            .unwrap()
            .starts_with("must be less than or equal to"),
        "{e}"
    );
    assert_eq!(e["memory_limit"][0], "is not a number");
    assert_eq!(
        e["max_processes_and_or_threads"][0],
        "must be greater than or equal to 1"
    );
    let e = refused(json!({"language_id": 71, "source_code": "x", "enable_network": true}));
    assert!(
        e["enable_network"][0]
            .as_str()
            .unwrap()
            .contains("not allowed"),
        "{e}"
    );
    let e = refused(
        json!({"language_id": 71, "source_code": "x", "command_line_arguments": "'unclosed"}),
    );
    assert!(e.get("command_line_arguments").is_some(), "{e}");
    let (code, e) = s.post(
        "/judge0/submissions?base64_encoded=true",
        &json!({"language_id": 71, "source_code": "***"}),
    );
    assert_eq!(code, 422);
    assert!(
        e["source_code"][0].as_str().unwrap().contains("base64"),
        "{e}"
    );
    let (code, e) = s.post_raw("/judge0/submissions", b"{\"language_id\": 71,");
    assert_eq!(code, 400);
    assert!(
        e["error"].as_str().unwrap().contains("malformed JSON"),
        "{e}"
    );
    // Nothing of the above was queued.
    let (_, workers) = s.get("/judge0/workers");
    assert_eq!(workers[0]["size"], 0, "{workers}");
}

#[test]
fn limits_in_judge0_units_hold_and_a_full_queue_is_judge0s_503() {
    let s = Server::start("judge0-limits", &[]);
    // wall_time_limit in seconds.
    let r = run(
        &s,
        json!({"language_id": 71, "wall_time_limit": 0.5, "source_code": "import time\ntime.sleep(5)"}),
    );
    assert_eq!(status_of(&r), 5, "{r}");
    assert!(
        r["wall_time"].as_str().unwrap().parse::<f64>().unwrap() < 3.0,
        "{r}"
    );
    // memory_limit in kilobytes: past it, Runtime Error (Other).
    let r = run(
        &s,
        json!({"language_id": 71, "memory_limit": 65536,
               "source_code": "hog = []\nwhile True:\n    hog.append(bytearray(8 << 20))"}),
    );
    assert_eq!(status_of(&r), 12, "{r}");
    assert!(r["message"].as_str().unwrap().contains("memory"), "{r}");
    // max_processes_and_or_threads: a fork bomb stops at the pids limit.
    let r = run(
        &s,
        json!({"language_id": 46, "max_processes_and_or_threads": 8,
               "source_code": "for i in $(seq 1 40); do sleep 2 & done; wait; echo done"}),
    );
    assert!(r["stderr"].as_str().unwrap_or("").contains("fork"), "{r}");
    // Accepted and within bounds, though Kiln does not need them.
    let r = run(
        &s,
        json!({"language_id": 71, "source_code": "print('ok')", "stack_limit": 65536,
               "number_of_runs": 3, "cpu_extra_time": 0.5,
               "enable_per_process_and_thread_time_limit": true}),
    );
    assert_eq!(r["stdout"], "ok\n");
    let (code, e) = s.post(
        "/judge0/submissions",
        &json!({"language_id": 71, "source_code": "x", "number_of_runs": 50, "cpu_extra_time": 9}),
    );
    assert_eq!(code, 422);
    assert!(
        e.get("number_of_runs").is_some() && e.get("cpu_extra_time").is_some(),
        "{e}"
    );

    // A full queue: Judge0's 503.
    let full = Server::start("judge0-full", &[("KILN_MAX_QUEUE_DEPTH", "0")]);
    let (code, e) = full.post(
        "/judge0/submissions",
        &json!({"language_id": 71, "source_code": "print(1)"}),
    );
    assert_eq!(code, 503, "{e}");
    assert_eq!(e, json!({"error": "queue is full"}));
}

#[test]
fn batches_take_and_give_many_with_per_item_errors() {
    let s = Server::start("judge0-batch", &[]);
    let (code, r) = s.post(
        "/judge0/submissions/batch?base64_encoded=true",
        &json!({"submissions": [
            {"language_id": 71, "source_code": b64(b"print('one')")},
            {"language_id": 63, "source_code": b64(b"console.log('two')")},
            {"language_id": 83, "source_code": b64(b"print(3)")},
        ]}),
    );
    assert_eq!(code, 201, "{r}");
    let items = r.as_array().unwrap();
    assert_eq!(items.len(), 3);
    let (a, b) = (
        items[0]["token"].as_str().unwrap(),
        items[1]["token"].as_str().unwrap(),
    );
    assert!(
        items[2]["language_id"][0]
            .as_str()
            .unwrap()
            .contains("not available"),
        "{r}"
    );
    let until = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let (code, v) = s.get(&format!(
            "/judge0/submissions/batch?tokens={a},{b},no-such-token&base64_encoded=true&fields=token,stdout,status"
        ));
        assert_eq!(code, 200);
        let subs = v["submissions"].as_array().unwrap().clone();
        if subs[..2].iter().all(|x| status_of(x) > 2) {
            break subs;
        }
        assert!(Instant::now() < until, "{v}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(got[0]["token"], a);
    assert_eq!(unb64(&got[0]["stdout"]), b"one\n");
    assert_eq!(unb64(&got[1]["stdout"]), b"two\n");
    assert_eq!(got[2], Value::Null, "an unknown token");
    let too_many: Vec<Value> = (0..21)
        .map(|_| json!({"language_id": 46, "source_code": "true"}))
        .collect();
    let (code, _) = s.post(
        "/judge0/submissions/batch",
        &json!({"submissions": too_many}),
    );
    assert_eq!(code, 400);
}

/// A zip archive of `files`, deflated, made by the host's Python.
fn zip(files: &[(&str, &str)]) -> String {
    let spec = serde_json::to_string(&files).unwrap();
    let out = Command::new("python3")
        .args([
            "-c",
            "import base64, io, json, sys, zipfile\nb = io.BytesIO()\nwith zipfile.ZipFile(b, 'w', zipfile.ZIP_DEFLATED) as z:\n    [z.writestr(n, c) for n, c in json.loads(sys.argv[1])]\nprint(base64.b64encode(b.getvalue()).decode())",
            &spec,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn multi_file_programs_compile_and_run_from_their_archive() {
    let s = Server::start("judge0-multi", &[]);
    let archive = zip(&[
        ("main.c", "#include <stdio.h>\n#include \"lib/greet.h\"\nint main(void) { greet(); return 0; }"),
        ("lib/greet.h", "#include <stdio.h>\nstatic void greet(void) { char n[16]; scanf(\"%15s\", n); printf(\"hello %s\\n\", n); }"),
        ("compile", "gcc -O2 -o prog main.c"),
        ("run", "./prog"),
    ]);
    let r = run(
        &s,
        json!({"language_id": 89, "additional_files": archive, "stdin": "kiln"}),
    );
    assert_eq!(status_of(&r), 3, "{r}");
    assert_eq!(r["stdout"], "hello kiln\n");
    // A compile script that fails is Judge0's Compilation Error.
    let broken = zip(&[("compile", "gcc -o prog missing.c"), ("run", "./prog")]);
    let r = run(&s, json!({"language_id": 89, "additional_files": broken}));
    assert_eq!(status_of(&r), 6, "{r}");
    assert!(
        r["compile_output"].as_str().unwrap().contains("missing.c"),
        "{r}"
    );
    // Additional files beside a single-file program, as Judge0 lays them in its work dir.
    let data = zip(&[("data.txt", "from the archive")]);
    let r = run(
        &s,
        json!({"language_id": 71, "source_code": "print(open('data.txt').read())", "additional_files": data}),
    );
    assert_eq!(r["stdout"], "from the archive\n", "{r}");
    let (code, e) = s.post(
        "/judge0/submissions",
        &json!({"language_id": 89, "additional_files": b64(b"not a zip")}),
    );
    assert_eq!(code, 422);
    assert!(
        e["additional_files"][0].as_str().unwrap().contains("zip"),
        "{e}"
    );
}

#[test]
fn callbacks_are_put_as_judge0_sends_them() {
    let s = Server::start(
        "judge0-callback",
        &[("KILN_CALLBACK_ALLOWED_NETWORKS", "127.0.0.1/32")],
    );
    let (url, caught) = catch_one_request();
    let (code, r) = s.post(
        "/judge0/submissions",
        &json!({"language_id": 71, "source_code": "print('called back')", "callback_url": url}),
    );
    assert_eq!(code, 201, "{r}");
    let received = caught.join().unwrap();
    let (request_line, body) = received.split_once("\r\n").unwrap();
    assert!(request_line.starts_with("PUT /hook "), "{request_line}");
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["token"], r["token"]);
    assert_eq!(v["status"], json!({"id": 3, "description": "Accepted"}));
    assert_eq!(unb64(&v["stdout"]), b"called back\n", "Judge0 sends base64");
}

#[test]
fn the_official_python_sdk_runs_its_examples_against_kiln() {
    let Some(python) = tools::pypi("judge0-sdk-0.0.8", "judge0==0.0.8") else {
        tools::unavailable("the judge0 SDK from PyPI (python3 -m venv, pip install judge0==0.0.8)");
        return;
    };
    let s = Server::start("judge0-sdk", &[("KILN_AUTH_TOKEN", "sdk-token")]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/judge0_sdk.py");
    let out = Command::new(python)
        .arg(script)
        .env("JUDGE0_CE_ENDPOINT", s.url("/judge0"))
        .env("JUDGE0_CE_AUTH_HEADERS", r#"{"X-Auth-Token": "sdk-token"}"#)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for line in [
        "run ok",
        "test cases ok",
        "batch ok",
        "multi-file ok",
        "languages ok",
    ] {
        assert!(stdout.contains(line), "{line} missing:\n{stdout}\n{stderr}");
    }
}
