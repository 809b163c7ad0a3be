//! Piston's v2 API (`/api/v2/runtimes`, `/api/v2/execute`) served by a real `kiln serve`, in the
//! shapes Piston's clients read.

use crate::server;
use crate::tools;

use serde_json::json;
use server::Server;

#[test]
fn piston_clients_get_piston_shapes() {
    let s = Server::start("piston", &[]);

    let (code, runtimes) = s.get("/api/v2/runtimes");
    assert_eq!(code, 200);
    let python = runtimes
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["language"] == "python")
        .expect("python is listed");
    assert!(python["version"].as_str().unwrap().starts_with('3'));
    assert!(python["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "py"));

    // A run: stdout, stderr, their output, the exit code, Piston's status letter.
    let (code, r) = s.post(
        "/api/v2/execute",
        &json!({"language": "py", "version": "*", "files": [{"content": "import sys\nprint(input() * 2)\nprint('e', file=sys.stderr)\nsys.exit(2)"}], "stdin": "ab"}),
    );
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["language"], "python");
    assert_eq!(r["run"]["stdout"], "abab\n");
    assert_eq!(r["run"]["stderr"], "e\n");
    assert_eq!(r["run"]["output"], "abab\ne\n");
    assert_eq!(r["run"]["code"], 2);
    assert_eq!(r["run"]["status"], "RE");
    assert!(r.get("compile").is_none(), "interpreted: no compile stage");

    // A compiled language that does not compile: the compile stage says why, there is no run.
    let (_, r) = s.post(
        "/api/v2/execute",
        &json!({"language": "c", "version": "*", "files": [{"name": "x.c", "content": "int main( {"}]}),
    );
    assert_eq!(r["compile"]["code"], 1, "{r}");
    assert!(
        r["compile"]["output"].as_str().unwrap().contains("error"),
        "{r}"
    );
    assert!(r.get("run").is_none(), "{r}");

    // Piston's Java: any public class name, in a file of that name.
    let (_, r) = s.post(
        "/api/v2/execute",
        &json!({"language": "java", "version": "*", "files": [{"name": "HelloWorld.java", "content": "public class HelloWorld { public static void main(String[] a) { System.out.println(\"hi\"); } }"}]}),
    );
    assert_eq!(r["compile"]["code"], 0, "{r}");
    assert_eq!(r["run"]["stdout"], "hi\n", "{r}");

    // run_timeout is the wall limit: a sleeper ends as TO.
    let (_, r) = s.post(
        "/api/v2/execute",
        &json!({"language": "python", "version": "3", "files": [{"content": "import time\ntime.sleep(30)"}], "run_timeout": 500}),
    );
    assert_eq!(r["run"]["status"], "TO", "{r}");
    assert_eq!(r["run"]["signal"], "SIGKILL", "{r}");

    // Piston's 400s: unknown runtime, no files, malformed request.
    let (code, r) = s.post(
        "/api/v2/execute",
        &json!({"language": "python", "version": "2.7", "files": [{"content": "print 1"}]}),
    );
    assert_eq!(
        (code, r["message"].as_str().unwrap()),
        (400, "python-2.7 runtime is unknown")
    );
    let (code, r) = s.post(
        "/api/v2/execute",
        &json!({"language": "python", "version": "*", "files": []}),
    );
    assert_eq!(code, 400);
    assert!(r["message"].as_str().unwrap().contains("files"), "{r}");
    let (code, r) = s.post("/api/v2/execute", &json!({"language": "python"}));
    assert_eq!(code, 400);
    assert!(
        r["message"].as_str().unwrap().contains("invalid request"),
        "{r}"
    );
}

#[test]
fn run_limits_apply_and_a_program_past_them_is_stopped() {
    let s = Server::start("piston-limits", &[]);
    let (_, r) = s.post(
        "/api/v2/execute",
        &json!({"language": "python", "version": "*", "files": [{"content": "while True: pass"}],
                "run_cpu_time": 300, "run_timeout": 5000}),
    );
    assert_eq!(r["run"]["status"], "TO", "{r}");
    assert!(r["run"]["cpu_time"].as_u64().unwrap() < 2000, "{r}");
    let (_, r) = s.post(
        "/api/v2/execute",
        &json!({"language": "python", "version": "*", "files": [{"content": "import time\ntime.sleep(10)"}],
                "run_timeout": 300, "compile_cpu_time": 1000, "compile_timeout": 1000}),
    );
    assert_eq!(r["run"]["status"], "TO", "{r}");
    assert!(r["run"]["wall_time"].as_u64().unwrap() < 3000, "{r}");
}

#[test]
fn packages_list_what_is_installed_and_cannot_be_changed_through_the_api() {
    let s = Server::start("piston-packages", &[]);
    let (code, list) = s.get("/api/v2/packages");
    assert_eq!(code, 200);
    let python = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["language"] == "python")
        .expect("python is listed");
    assert_eq!(python["installed"], true);
    assert!(python["language_version"]
        .as_str()
        .unwrap()
        .starts_with('3'));
    let (code, e) = s.post(
        "/api/v2/packages",
        &json!({"language": "python", "version": "3.12.0"}),
    );
    assert_eq!(code, 400);
    assert!(
        e["message"].as_str().unwrap().contains("scripts/runtimes"),
        "{e}"
    );
}

#[test]
fn the_npm_piston_client_runs_its_readme_example_against_kiln() {
    let Some(dir) = tools::npm("piston-client-test", &["piston-client@1.0.2"]) else {
        tools::unavailable("piston-client from npm");
        return;
    };
    let s = Server::start("piston-client", &[]);
    let out = tools::node(&dir, "piston_client.mjs", &[("PISTON_URL", s.url(""))]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for part in [
        "runtimes ok",
        "readme example ok",
        "compiled ok",
        "config object ok",
        "unknown language ok",
    ] {
        assert!(stdout.contains(part), "{part} missing:\n{stdout}\n{stderr}");
    }
}
