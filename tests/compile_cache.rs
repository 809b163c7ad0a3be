//! The compile cache through a real `kiln serve`: the same program submitted many times compiles
//! once, a compile error is answered from the cache, options make another build, entries survive
//! a kill -9 and restart while a cut one is never served, and the bound evicts the least recently
//! used. Compiles are counted from /metrics.

use crate::server;

use serde_json::{json, Value};
use server::Server;

const CPP: &str = "#include <iostream>\n#include <string>\nint main() { std::string s; std::cin >> s; std::cout << \"hi \" << s << \"\\n\"; return 0; }\n";

/// The value of `kiln_compile_cache_total{event=...}` (0 when never counted).
fn events(s: &Server, event: &str) -> u64 {
    let text = s.get_text("/metrics");
    let needle = format!("kiln_compile_cache_total{{event=\"{event}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

/// Waits until `event` has been counted `n` times: builds are stored beside the result, not
/// before it.
fn wait_events(s: &Server, event: &str, n: u64) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while events(s, event) < n {
        assert!(
            std::time::Instant::now() < until,
            "{event} never reached {n}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn cache_bytes(s: &Server) -> u64 {
    s.get_text("/metrics")
        .lines()
        .find_map(|l| l.strip_prefix("kiln_compile_cache_bytes "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

fn run(s: &Server, body: Value) -> Value {
    let (code, r) = s.post("/v1/submissions?wait=true", &body);
    assert_eq!(code, 200, "{r}");
    r
}

#[test]
fn one_program_submitted_ten_times_compiles_once() {
    let s = Server::start("cc-ten", &[]);
    for i in 0..10 {
        let r = run(
            &s,
            json!({"language": "cpp", "source": CPP, "stdin": format!("n{i}")}),
        );
        assert_eq!(r["status"], "accepted", "{r}");
        assert_eq!(r["stdout"], format!("hi n{i}\n"));
        wait_events(&s, "stored", 1);
    }
    assert_eq!(events(&s, "miss"), 1, "one compile");
    assert_eq!(events(&s, "stored"), 1);
    assert_eq!(events(&s, "hit"), 9, "nine runs of the cached build");
    assert!(cache_bytes(&s) > 0);

    // Other compiler options are another build; the same options again are a hit.
    for _ in 0..2 {
        let r = run(
            &s,
            json!({"language": "cpp", "source": CPP, "stdin": "o", "compiler_options": ["-O0"]}),
        );
        assert_eq!(r["stdout"], "hi o\n");
        wait_events(&s, "stored", 2);
    }
    assert_eq!(events(&s, "miss"), 2);
    assert_eq!(events(&s, "hit"), 10);

    // A compile error is kept too: the second is answered from the cache, word for word.
    let broken = json!({"language": "cpp", "source": "int main( {"});
    let first = run(&s, broken.clone());
    wait_events(&s, "stored", 3);
    let second = run(&s, broken);
    assert_eq!(first["status"], "compile_error");
    assert_eq!(second["status"], "compile_error");
    assert_eq!(first["compile_output"], second["compile_output"]);
    assert!(second["compile_output"].as_str().unwrap().contains("error"));
    assert_eq!(events(&s, "hit_failed"), 1);

    // An interpreted language never touches the cache.
    let before = events(&s, "miss") + events(&s, "hit");
    run(&s, json!({"language": "python", "source": "print(1)"}));
    assert_eq!(events(&s, "miss") + events(&s, "hit"), before);
}

#[test]
fn entries_survive_a_kill_and_a_cut_entry_is_never_served() {
    let mut s = Server::start("cc-restart", &[]);
    let c = json!({"language": "c", "source": "#include <stdio.h>\nint main(void) { puts(\"from c\"); return 0; }"});
    let cpp = json!({"language": "cpp", "source": CPP, "stdin": "x"});
    run(&s, c.clone());
    run(&s, cpp.clone());
    wait_events(&s, "stored", 2);
    s.kill9();

    // What a write cut short by kill -9 leaves: a temporary file; and an entry cut short.
    let dir = s.data_dir.join("compile-cache");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    assert_eq!(entries.len(), 2, "{entries:?}");
    let (small, big) = (&entries[0], &entries[1]);
    let whole = std::fs::read(big).unwrap();
    std::fs::write(big, &whole[..whole.len() / 2]).unwrap();
    let leftover = dir.join("tmp-half-written");
    std::fs::write(&leftover, &whole[..100]).unwrap();

    s.boot();
    assert!(
        !leftover.exists(),
        "a half-written entry is removed at start"
    );
    let r1 = run(&s, c);
    let r2 = run(&s, cpp);
    assert_eq!(r1["stdout"], "from c\n");
    assert_eq!(
        r2["stdout"], "hi x\n",
        "the cut entry was not served: compiled again"
    );
    assert_eq!(
        events(&s, "hit"),
        1,
        "the whole entry was kept across the restart"
    );
    assert_eq!(events(&s, "miss"), 1, "the cut one was a miss");
    assert!(small.exists());
}

#[test]
fn the_cache_stays_within_its_bound() {
    // Room for about two small C builds.
    let s = Server::start("cc-bound", &[("KILN_COMPILE_CACHE_BYTES", "40000")]);
    for i in 0..5 {
        let r = run(
            &s,
            json!({"language": "c", "source": format!("#include <stdio.h>\nint main(void) {{ puts(\"{i}\"); return 0; }}")}),
        );
        assert_eq!(r["stdout"], format!("{i}\n"));
        wait_events(&s, "stored", i + 1);
        assert!(cache_bytes(&s) <= 40000, "{}", cache_bytes(&s));
    }
    assert!(events(&s, "eviction") >= 2, "{}", events(&s, "eviction"));
    let on_disk: u64 = std::fs::read_dir(s.data_dir.join("compile-cache"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(on_disk <= 40000, "{on_disk}");
}
