//! The playground page at `/`, driven in headless Chromium (Debian's `chromium`, through
//! puppeteer-core from npm over the DevTools protocol) against a real `kiln serve`: it lists the
//! runtimes, runs a Python and a C program and shows their output, status, time and memory, offers
//! a curl line that does the same, shows a compile error, and shows the live pool and queue.
//! `KILN_PLAYGROUND_SCREENSHOTS=docs` keeps the screenshots (docs/playground.png).

use crate::server;
use crate::tools;

use server::Server;

#[test]
fn the_page_is_served_whole_with_nothing_from_elsewhere() {
    let s = Server::start("playground-page", &[("KILN_AUTH_TOKEN", "page-token")]);
    // The page itself needs no token; everything it loads is inline or from this server.
    let resp = ureq::get(&s.url("/")).call().expect("the page is public");
    assert!(resp.content_type().starts_with("text/html"));
    let csp = resp
        .header("Content-Security-Policy")
        .unwrap_or("")
        .to_string();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let html = resp.into_string().unwrap();
    assert!(html.contains("id=\"run-button\""));
    for outside in ["http://", "https://", "//cdn"] {
        assert!(!html.contains(outside), "the page refers to {outside}");
    }
    // The API behind it still wants the token.
    assert_eq!(s.get("/v1/runtimes").0, 401);
}

#[test]
fn the_playground_runs_programs_in_a_real_browser() {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(chromium) = chromium else {
        tools::unavailable("Chromium (Debian package chromium; scripts/test-all installs it)");
        return;
    };
    let Some(dir) = tools::npm("playground-test", &["puppeteer-core@24.43.1"]) else {
        tools::unavailable("puppeteer-core from npm");
        return;
    };
    let s = Server::start("playground", &[]);
    let shots = match std::env::var("KILN_PLAYGROUND_SCREENSHOTS") {
        Ok(d) => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(d),
        Err(_) => s.data_dir.clone(),
    };
    let out = tools::node(
        &dir,
        "playground.mjs",
        &[
            ("KILN_URL", s.url("")),
            ("CHROMIUM", chromium.to_string()),
            ("SCREENSHOT_DIR", shots.display().to_string()),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for part in [
        "python ok",
        "c ok",
        "curl ok",
        "compile error ok",
        "live ok",
    ] {
        assert!(stdout.contains(part), "{part} missing:\n{stdout}\n{stderr}");
    }
    assert!(shots.join("playground.png").exists());
}
