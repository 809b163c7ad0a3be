//! Test-case sets through a real `kiln serve`: one compile, every test in a fresh pod of its own,
//! statuses per test and overall, stop at the first failure, a memory bomb kept to its own test, a
//! compile error for the whole set, bounded output, and bad input refused.

use crate::server;

use serde_json::{json, Value};
use server::Server;

/// Squares its input; leaves a file in /tmp and says so if it finds one (a pod used twice).
const SQUARE: &str = r#"#include <cstdio>
#include <iostream>
int main() {
    if (std::FILE *f = std::fopen("/tmp/used", "r")) { std::fclose(f); std::cout << "reused "; }
    std::FILE *mark = std::fopen("/tmp/used", "w");
    if (mark) std::fclose(mark);
    long x;
    std::cin >> x;
    std::cout << x * x << "\n";
    return 0;
}
"#;

fn metric(s: &Server, event: &str) -> u64 {
    let needle = format!("kiln_compile_cache_total{{event=\"{event}\"}} ");
    s.get_text("/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

fn run(s: &Server, body: Value) -> Value {
    let (code, r) = s.post("/v1/submissions?wait=true", &body);
    assert_eq!(code, 200, "{r}");
    r
}

/// Twenty tests of the square program; test 7 (1-based) expects a wrong answer.
fn twenty() -> Vec<Value> {
    (1..=20)
        .map(|i: i64| {
            let want = if i == 7 { 0 } else { i * i };
            json!({"stdin": i.to_string(), "expected_output": want.to_string()})
        })
        .collect()
}

#[test]
fn twenty_tests_compile_once_and_each_runs_in_a_pod_of_its_own() {
    let s = Server::start("sets-twenty", &[]);
    let r = run(
        &s,
        json!({"language": "cpp", "source": SQUARE, "tests": twenty()}),
    );
    assert_eq!(r["status"], "wrong_answer", "{r}");
    assert!(
        r["message"].as_str().unwrap().starts_with("test 7 of 20"),
        "{r}"
    );
    let tests = r["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 20);
    for (i, t) in tests.iter().enumerate() {
        let n = (i + 1) as i64;
        let want = if n == 7 { "wrong_answer" } else { "accepted" };
        assert_eq!(t["status"], want, "test {n}: {t}");
        // A pod that had run another test would have its mark in /tmp.
        assert_eq!(t["stdout"], format!("{}\n", n * n), "test {n}: {t}");
    }
    assert_eq!(
        r["stdout"], "49\n",
        "the top level shows the first failing test"
    );
    assert_eq!(metric(&s, "miss"), 1, "one compile for twenty tests");
    assert_eq!(
        metric(&s, "hit"),
        0,
        "the other tests had the build laid in"
    );

    // The same set again: its compile comes from the cache.
    let again = run(
        &s,
        json!({"language": "cpp", "source": SQUARE, "tests": twenty()}),
    );
    assert_eq!(again["tests"].as_array().unwrap().len(), 20);
    assert_eq!(metric(&s, "miss"), 1);
    assert_eq!(metric(&s, "hit"), 1);
}

#[test]
fn stop_on_first_failure_stops_at_the_first_failing_test() {
    // The cache off: the set lays its own build into its tests.
    let s = Server::start("sets-stop", &[("KILN_COMPILE_CACHE_BYTES", "0")]);
    let r = run(
        &s,
        json!({"language": "cpp", "source": SQUARE, "tests": twenty(), "stop_on_first_failure": true}),
    );
    assert_eq!(r["status"], "wrong_answer");
    let tests = r["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 7, "{r}");
    assert_eq!(tests[6]["status"], "wrong_answer");
    assert!(tests[..6].iter().all(|t| t["status"] == "accepted"));
    assert!(
        r["message"].as_str().unwrap().contains("stopped there"),
        "{r}"
    );

    // All accepted: the result says so and holds every test.
    let all: Vec<Value> = (1..=5)
        .map(|i: i64| json!({"stdin": i.to_string(), "expected_output": (i * i).to_string()}))
        .collect();
    let r = run(
        &s,
        json!({"language": "cpp", "source": SQUARE, "tests": all, "stop_on_first_failure": true}),
    );
    assert_eq!(r["status"], "accepted", "{r}");
    assert_eq!(r["message"], "all 5 tests accepted");
    assert_eq!(r["tests"].as_array().unwrap().len(), 5);
}

#[test]
fn a_memory_bomb_in_one_test_does_not_touch_the_others() {
    let s = Server::start("sets-bomb", &[]);
    let program = "import sys\nline = sys.stdin.read().strip()\nif line == 'bomb':\n    hog = []\n    while True:\n        hog.append(bytearray(16 << 20))\nprint('ok', line)\n";
    let r = run(
        &s,
        json!({"language": "python", "source": program, "limits": {"memory_bytes": 64 << 20},
               "tests": [{"stdin": "a"}, {"stdin": "bomb"}, {"stdin": "c", "args": ["x"]}]}),
    );
    let tests = r["tests"].as_array().unwrap();
    assert_eq!(tests[0]["stdout"], "ok a\n");
    assert_eq!(tests[1]["status"], "memory_limit_exceeded", "{r}");
    assert_eq!(tests[2]["stdout"], "ok c\n");
    assert_eq!(tests[2]["status"], "accepted");
    assert_eq!(r["status"], "memory_limit_exceeded");
    assert!(
        r["message"].as_str().unwrap().starts_with("test 2 of 3"),
        "{r}"
    );
}

#[test]
fn a_compile_error_is_the_result_of_the_whole_set() {
    let s = Server::start("sets-compile-error", &[]);
    let r = run(
        &s,
        json!({"language": "c", "source": "int main( {", "tests": [{"stdin": "1"}, {"stdin": "2"}]}),
    );
    assert_eq!(r["status"], "compile_error", "{r}");
    assert!(r["compile_output"].as_str().unwrap().contains("error"));
    assert!(r.get("tests").is_none(), "no test ran: {r}");
}

#[test]
fn test_output_is_bounded_and_says_where_it_was_cut() {
    let s = Server::start(
        "sets-bound",
        &[("KILN_LIMITS__MAX_TESTS_OUTPUT_BYTES", "1000")],
    );
    let tests: Vec<Value> = (0..5).map(|_| json!({"stdin": ""})).collect();
    let r = run(
        &s,
        json!({"language": "python", "source": "print('x' * 399)", "tests": tests}),
    );
    let tests = r["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 5);
    let total: usize = tests
        .iter()
        .map(|t| t["stdout"].as_str().unwrap().len() + t["stderr"].as_str().unwrap().len())
        .sum();
    assert!(total <= 1000, "{total}");
    assert_eq!(tests[0]["stdout"].as_str().unwrap().len(), 400);
    assert!(tests[0]["message"].is_null());
    assert!(
        tests[4]["message"].as_str().unwrap().contains("output cut"),
        "{r}"
    );
}

#[test]
fn bad_test_sets_are_refused_and_run_nothing() {
    let s = Server::start("sets-bad", &[("KILN_LIMITS__MAX_TESTS", "3")]);
    let too_many: Vec<Value> = (0..4).map(|_| json!({"stdin": ""})).collect();
    let (code, e) = s.post(
        "/v1/submissions",
        &json!({"language": "python", "source": "print(1)", "tests": too_many}),
    );
    assert_eq!(code, 422);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("4 tests is over the maximum of 3"),
        "{e}"
    );
    let (code, e) = s.post(
        "/v1/submissions",
        &json!({"language": "python", "source": "print(1)", "tests": [{"stdin": "", "limits": {"wall_time_ms": 999999999}}]}),
    );
    assert_eq!(code, 422);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .starts_with("tests[0]: limits.wall_time_ms"),
        "{e}"
    );
    let (code, e) = s.post(
        "/v1/submissions",
        &json!({"language": "python", "source": "print(1)", "tests": [{"input": "x"}]}),
    );
    assert_eq!(code, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("input"), "{e}");
    let (_, depth) = s.get("/readyz");
    assert_eq!(depth["queue_depth"], 0, "{depth}");
}
