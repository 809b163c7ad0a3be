//! `kiln run`: submit one file to a server (or to an embedded one started for the purpose) and
//! print what it printed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::json;

use crate::config::Settings;
use crate::languages::Registry;

/// Submits `file`, waits for the result, prints stdout/stderr, and returns the exit code to use.
pub fn run_file(
    mut settings: Settings,
    file: &Path,
    language: Option<String>,
    stdin: Option<PathBuf>,
    server: Option<String>,
    args: Vec<String>,
) -> anyhow::Result<i32> {
    let source = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let stdin = match stdin {
        Some(p) => std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
        None => Vec::new(),
    };
    let registry =
        Registry::load(settings.languages_file.as_deref()).map_err(anyhow::Error::msg)?;
    let language = match language {
        Some(l) => l,
        None => language_of(file, &registry)?,
    };
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let body = json!({
        "language": language,
        "files": [{"name": file.file_name().map(|n| n.to_string_lossy().into_owned()), "content": b64(&source), "encoding": "base64"}],
        "stdin": String::from_utf8(stdin).context("stdin must be UTF-8 text")?,
        "args": args,
    });

    let (base, embedded) = match server {
        Some(url) => (url.trim_end_matches('/').to_string(), None),
        None => {
            let dir = std::env::temp_dir().join(format!("kiln-run-{}", std::process::id()));
            settings.data_dir = dir.clone();
            settings.listen = "127.0.0.1:0".into();
            settings.pool_size = 1;
            // A one-off run uses warm caches that exist but does not spend time filling them.
            settings.warm_caches = false;
            let embedded = Embedded::start(settings)?;
            (format!("http://{}", embedded.addr), Some((embedded, dir)))
        }
    };
    let mut req =
        ureq::post(&format!("{base}/v1/submissions?wait=true")).timeout(Duration::from_secs(600));
    if let Ok(token) = std::env::var("KILN_AUTH_TOKEN") {
        req = req.set("Authorization", &format!("Bearer {token}"));
    }
    let response = req.send_json(body);
    let result: serde_json::Value = match response {
        Ok(r) => r.into_json()?,
        Err(ureq::Error::Status(code, r)) => {
            let v: serde_json::Value = r.into_json().unwrap_or_default();
            bail!(
                "the server answered {code}: {}",
                v["error"].as_str().unwrap_or("(no message)")
            );
        }
        Err(e) => bail!("could not reach {base}: {e}"),
    };
    if let Some((e, dir)) = embedded {
        e.stop();
        let _ = std::fs::remove_dir_all(dir);
    }
    let decode = |field: &str| -> Vec<u8> {
        let text = result[field].as_str().unwrap_or("");
        let is_b64 = result["base64_fields"]
            .as_array()
            .is_some_and(|a| a.iter().any(|f| f == field));
        if is_b64 {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap_or_default()
        } else {
            text.as_bytes().to_vec()
        }
    };
    std::io::stderr().write_all(&decode("compile_output"))?;
    std::io::stdout().write_all(&decode("stdout"))?;
    std::io::stderr().write_all(&decode("stderr"))?;
    let status = result["status"].as_str().unwrap_or("");
    if status == "queued" || status == "running" {
        bail!("no result yet for {}: it is {status}", result["id"]);
    }
    if !matches!(status, "accepted" | "runtime_error") {
        let message = result["message"].as_str().unwrap_or("");
        eprintln!(
            "kiln: {status}{}{message}",
            if message.is_empty() { "" } else { ": " }
        );
    }
    Ok(
        match (result["exit_code"].as_i64(), result["signal"].as_i64()) {
            (Some(code), _) => code as i32,
            (None, Some(sig)) => 128 + sig as i32,
            _ => 1,
        },
    )
}

fn language_of(file: &Path, registry: &Registry) -> anyhow::Result<String> {
    let ext = file
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default();
    registry
        .available
        .iter()
        .find(|l| {
            Path::new(&l.entry)
                .extension()
                .is_some_and(|e| e.to_string_lossy() == ext)
        })
        .map(|l| l.name.clone())
        .with_context(|| {
            format!(
                "cannot tell the language of {} from its extension; pass --language",
                file.display()
            )
        })
}

/// An in-process instance on a background thread, for `kiln run` without `--server`.
struct Embedded {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Embedded {
    fn start(settings: Settings) -> anyhow::Result<Embedded> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            actix::System::new().block_on(async move {
                match crate::commands::serve::start(settings).await {
                    Ok(instance) => {
                        let _ = tx.send(Ok(instance.addr));
                        let _ = stopped.await;
                        instance.server.stop(false).await;
                        instance.tree.parts.backend.shutdown();
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })
        });
        let addr = rx.recv().context("the embedded instance did not start")??;
        Ok(Embedded { addr, stop, thread })
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}
