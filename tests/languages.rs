//! Every shipped language the host has compiles and runs a hello world in a real sandbox.

mod common;

use common::*;
use kiln::outcome::Status;

async fn hello(language: &str, program: &str) {
    if registry().find(language, None).is_err() {
        // CI machines have every shipped toolchain; a developer's laptop may not.
        assert!(
            std::env::var("CI").is_err(),
            "{language} is unavailable in CI: {:?}",
            registry().unavailable
        );
        eprintln!(
            "skipping {language}: not installed here: {:?}",
            registry().unavailable
        );
        return;
    }
    let o = run(source(language, program)).await;
    assert_eq!(o.status, Status::Accepted, "{language}: {o:?}");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout.0),
        "hello\n",
        "{language}: {o:?}"
    );
    // A toolchain missing a file it reads (pods see only an allow-list of /etc) says so here.
    assert!(o.stderr.0.is_empty(), "{language}: {o:?}");
}

#[tokio::test]
async fn python() {
    hello("python", "print('hello')").await;
}

#[tokio::test]
async fn javascript() {
    hello("javascript", "console.log('hello')").await;
}

#[tokio::test]
async fn bash() {
    hello("bash", "echo hello").await;
}

#[tokio::test]
async fn java() {
    hello("java", "public class Main { public static void main(String[] a) { System.out.println(\"hello\"); } }").await;
}

#[tokio::test]
async fn rust() {
    hello("rust", "fn main() { println!(\"hello\"); }").await;
}

#[tokio::test]
async fn go() {
    hello(
        "go",
        "package main\nimport \"fmt\"\nfunc main() { fmt.Println(\"hello\") }",
    )
    .await;
}

#[test]
fn the_runtimes_list_names_each_shipped_language_once() {
    let r = registry();
    let mut names: Vec<&str> = r
        .available
        .iter()
        .map(|l| l.name.as_str())
        .chain(r.unavailable.iter().map(|(n, _)| n.as_str()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "bash",
            "c",
            "cpp",
            "go",
            "java",
            "javascript",
            "python",
            "rust"
        ]
    );
}
