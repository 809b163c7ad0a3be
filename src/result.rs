//! The result of a submission as users see it: the runner's outcome plus the submission's id,
//! attempts and timestamps. Kept in the store, sent on the results side, rendered as JSON.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::bytes::Bytes;
use crate::outcome::{Outcome, Status};

/// One submission's final result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    pub id: String,
    pub language: String,
    pub outcome: Outcome,
    pub attempts: u32,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    pub finished_at_ms: u64,
}

/// A result as bincode held it before test-case sets (see `crate::outcome::FirstOutcome`).
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
pub(crate) struct FirstRunResult {
    id: String,
    language: String,
    outcome: crate::outcome::FirstOutcome,
    attempts: u32,
    created_at_ms: u64,
    finished_at_ms: u64,
}

impl From<FirstRunResult> for RunResult {
    fn from(f: FirstRunResult) -> RunResult {
        RunResult {
            id: f.id,
            language: f.language,
            outcome: f.outcome.into(),
            attempts: f.attempts,
            created_at_ms: f.created_at_ms,
            finished_at_ms: f.finished_at_ms,
        }
    }
}

impl RunResult {
    /// A bincode result in the current layout or the one before test-case sets.
    pub fn from_bincode(b: &[u8]) -> Result<RunResult, String> {
        crate::submission::decode_bincode::<RunResult, FirstRunResult>(b)
    }
}

/// One test of a test-case set as users see it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TestView {
    pub status: Status,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub cpu_time_ms: u64,
    pub wall_time_ms: u64,
    pub memory_bytes: u64,
    pub message: Option<String>,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

/// Program output in JSON: text when it is valid UTF-8, base64 otherwise (and flagged so).
fn output(b: &Bytes) -> (String, bool) {
    match b.as_utf8() {
        Some(s) => (s.to_string(), false),
        None => (base64::engine::general_purpose::STANDARD.encode(&b.0), true),
    }
}

/// The JSON shape of a result (API responses, events, the results topic).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ResultView {
    pub id: String,
    pub status: Status,
    pub language: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub compile_output: String,
    /// Names the fields (stdout, stderr, compile_output) that are base64 because they were not
    /// valid UTF-8.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub base64_fields: Vec<String>,
    pub cpu_time_ms: u64,
    pub wall_time_ms: u64,
    pub memory_bytes: u64,
    pub message: Option<String>,
    pub attempts: u32,
    pub created_at: String,
    pub finished_at: String,
    /// Judge0's status id for the same verdict, for clients moving from Judge0.
    pub judge0_status_id: u8,
    /// A test-case set's runs in test order (`tests.N.stdout` in `base64_fields` when not UTF-8).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<TestView>,
}

impl RunResult {
    pub fn view(&self) -> ResultView {
        let o = &self.outcome;
        let mut base64_fields = Vec::new();
        let mut field = |name: &str, b: &Bytes| {
            let (text, b64) = output(b);
            if b64 {
                base64_fields.push(name.to_string());
            }
            text
        };
        let stdout = field("stdout", &o.stdout);
        let stderr = field("stderr", &o.stderr);
        let compile_output = field("compile_output", &o.compile_output);
        let tests = o
            .tests
            .iter()
            .enumerate()
            .map(|(i, t)| TestView {
                status: t.status,
                exit_code: t.exit_code,
                signal: t.signal,
                stdout: field(&format!("tests.{i}.stdout"), &t.stdout),
                stderr: field(&format!("tests.{i}.stderr"), &t.stderr),
                cpu_time_ms: t.cpu_time_ms,
                wall_time_ms: t.wall_time_ms,
                memory_bytes: t.memory_bytes,
                message: t.message.clone(),
            })
            .collect();
        ResultView {
            tests,
            id: self.id.clone(),
            status: o.status,
            language: self.language.clone(),
            exit_code: o.exit_code,
            signal: o.signal,
            stdout,
            stderr,
            compile_output,
            base64_fields,
            cpu_time_ms: o.cpu_time_ms,
            wall_time_ms: o.wall_time_ms,
            memory_bytes: o.memory_bytes,
            message: o.message.clone(),
            attempts: self.attempts,
            created_at: rfc3339(self.created_at_ms),
            finished_at: rfc3339(self.finished_at_ms),
            judge0_status_id: o.status.judge0_id(o.signal),
        }
    }
}

impl ResultView {
    /// The result this view shows (as a consumer of the results topic reads it back): base64
    /// fields decoded, times parsed.
    pub fn into_result(self) -> Result<RunResult, String> {
        let bytes = |name: &str, text: String| -> Result<Bytes, String> {
            if self.base64_fields.iter().any(|f| f == name) {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map(Bytes)
                    .map_err(|e| format!("{name} is not base64: {e}"))
            } else {
                Ok(Bytes(text.into_bytes()))
            }
        };
        let ms = |text: &str| -> Result<u64, String> {
            humantime::parse_rfc3339(text)
                .map_err(|e| format!("{text:?} is not an RFC 3339 time: {e}"))
                .map(|t| {
                    t.duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64)
                })
        };
        Ok(RunResult {
            outcome: crate::outcome::Outcome {
                status: self.status,
                exit_code: self.exit_code,
                signal: self.signal,
                stdout: bytes("stdout", self.stdout.clone())?,
                stderr: bytes("stderr", self.stderr.clone())?,
                compile_output: bytes("compile_output", self.compile_output.clone())?,
                cpu_time_ms: self.cpu_time_ms,
                wall_time_ms: self.wall_time_ms,
                memory_bytes: self.memory_bytes,
                message: self.message.clone(),
                forked: false,
                tests: self
                    .tests
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        Ok(crate::outcome::TestOutcome {
                            status: t.status,
                            exit_code: t.exit_code,
                            signal: t.signal,
                            stdout: bytes(&format!("tests.{i}.stdout"), t.stdout.clone())?,
                            stderr: bytes(&format!("tests.{i}.stderr"), t.stderr.clone())?,
                            cpu_time_ms: t.cpu_time_ms,
                            wall_time_ms: t.wall_time_ms,
                            memory_bytes: t.memory_bytes,
                            message: t.message.clone(),
                        })
                    })
                    .collect::<Result<_, String>>()?,
            },
            created_at_ms: ms(&self.created_at)?,
            finished_at_ms: ms(&self.finished_at)?,
            attempts: self.attempts,
            language: self.language,
            id: self.id,
        })
    }
}

#[cfg(test)]
mod view_tests {
    use super::*;

    #[test]
    fn a_view_reads_back_into_the_same_result() {
        let r = RunResult {
            id: "x".into(),
            language: "python".into(),
            outcome: crate::outcome::Outcome {
                stdout: Bytes(vec![0xff, 0, 1]),
                stderr: Bytes(b"text".to_vec()),
                ..crate::outcome::Outcome::failed(crate::outcome::Status::RuntimeError, "why")
            },
            attempts: 2,
            created_at_ms: 1_700_000_000_123,
            finished_at_ms: 1_700_000_001_456,
        };
        let back = r.view().into_result().unwrap();
        assert_eq!(back.view(), r.view());
        assert_eq!(back.outcome.stdout.0, [0xff, 0, 1]);
        assert_eq!(back.finished_at_ms, r.finished_at_ms);
    }
}
