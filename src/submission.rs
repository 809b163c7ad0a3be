//! Submissions as producers write them (HTTP JSON, Kafka JSON or bincode), their validation, and
//! their resolution into a `Job` against the language registry and the server's limits.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::bytes::Bytes;
use crate::entry_point::{EntryNames, EntryPoint};
use crate::job::{Job, JobFile, Limits, Stage};
use crate::languages::{LimitOverrides, Registry};

/// Version of the submission and result wire formats.
pub const WIRE_VERSION: u32 = 1;

/// How a file's `content` is encoded in JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Utf8,
    Base64,
    Hex,
}

/// One source file as submitted.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmittedFile {
    /// Defaults to the language's entry file name for the first file.
    #[serde(default)]
    pub name: Option<String>,
    pub content: String,
    #[serde(default)]
    pub encoding: Encoding,
}

/// Limits a submission asks for; each falls back to the server default when absent.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedLimits {
    pub wall_time_ms: Option<u64>,
    pub cpu_time_ms: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub processes: Option<u32>,
    pub output_bytes: Option<u64>,
    pub file_size_bytes: Option<u64>,
    /// Whole cores the program may keep busy at once.
    pub cpus: Option<u32>,
}

/// A submission: what a producer asks Kiln to run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    /// The wire format's version (`WIRE_VERSION`); absent means the current one.
    #[serde(default)]
    pub schema_version: Option<u32>,
    /// Client-chosen id; the same id submitted twice is the same submission. Required on Kafka,
    /// where it is the key of the result.
    #[serde(default)]
    pub id: Option<String>,
    pub language: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub files: Vec<SubmittedFile>,
    /// Shorthand for one file with the language's default name.
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub stdin: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub expected_output: Option<String>,
    #[serde(default)]
    pub limits: RequestedLimits,
    /// Where to POST the result when it is published (as Judge0's callback_url), besides
    /// keeping it for GET.
    #[serde(default)]
    pub callback_url: Option<String>,
    /// The program's stderr joins its stdout in the order written (Judge0's option of the same
    /// name; Piston's combined `output`).
    #[serde(default)]
    pub redirect_stderr_to_stdout: bool,
    /// Extra options for the compiler, placed right after its name (Judge0's
    /// `compiler_options`); only for languages whose compile command is the compiler itself.
    #[serde(default)]
    pub compiler_options: Vec<String>,
    /// The shape of the callback: Kiln's result POSTed, or Judge0's submission PUT (set by the
    /// Judge0-compatible API).
    #[serde(default)]
    pub callback_format: CallbackFormat,
    /// A test-case set: compiled once, each test run in a fresh pod of its own; the result holds
    /// every test's run in `tests`.
    #[serde(default)]
    pub tests: Vec<TestCase>,
    /// With `tests`: stop at the first test that is not accepted (in test order).
    #[serde(default)]
    pub stop_on_first_failure: bool,
}

/// One test of a test-case set: its stdin and expected output, and optionally its own args and
/// limits (else the submission's).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    #[serde(default)]
    pub stdin: String,
    #[serde(default)]
    pub expected_output: Option<String>,
    #[serde(default)]
    pub args: Option<Vec<String>>,
    #[serde(default)]
    pub limits: Option<RequestedLimits>,
}

/// A submission as bincode held it before `compiler_options` and `callback_format` (journals
/// and Rust producers of that time): read as it was, the new fields at their defaults.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct FirstLayout {
    schema_version: Option<u32>,
    id: Option<String>,
    language: String,
    version: Option<String>,
    files: Vec<SubmittedFile>,
    source: Option<String>,
    stdin: String,
    args: Vec<String>,
    expected_output: Option<String>,
    limits: RequestedLimits,
    callback_url: Option<String>,
    redirect_stderr_to_stdout: bool,
}

impl From<FirstLayout> for Submission {
    fn from(f: FirstLayout) -> Submission {
        Submission {
            schema_version: f.schema_version,
            id: f.id,
            language: f.language,
            version: f.version,
            files: f.files,
            source: f.source,
            stdin: f.stdin,
            args: f.args,
            expected_output: f.expected_output,
            limits: f.limits,
            callback_url: f.callback_url,
            redirect_stderr_to_stdout: f.redirect_stderr_to_stdout,
            ..Default::default()
        }
    }
}

/// Decodes `T` from bincode in the current layout, or else in the layout `Old` of before, so
/// that what an earlier Kiln journaled (or an earlier producer sent) is still read.
pub fn decode_bincode<T, Old>(b: &[u8]) -> Result<T, String>
where
    T: serde::de::DeserializeOwned,
    Old: serde::de::DeserializeOwned + Into<T>,
{
    let config = bincode::config::standard();
    match bincode::serde::decode_from_slice::<T, _>(b, config) {
        Ok((v, used)) if used == b.len() => Ok(v),
        first => match bincode::serde::decode_from_slice::<Old, _>(b, config) {
            Ok((old, used)) if used == b.len() => Ok(old.into()),
            _ => Err(match first {
                Ok(_) => "trailing bytes after the value".to_string(),
                Err(e) => e.to_string(),
            }),
        },
    }
}

impl Submission {
    /// A bincode submission, in the current layout or the first one.
    pub fn from_bincode(b: &[u8]) -> Result<Submission, String> {
        decode_bincode::<Submission, FirstLayout>(b)
    }
}

/// A submission as it travels through the queue.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub id: String,
    pub submission: Submission,
    pub created_at_ms: u64,
}

impl Envelope {
    /// A journaled envelope, also one an earlier Kiln wrote (see `Submission::from_bincode`).
    pub fn from_bincode(b: &[u8]) -> Result<Envelope, String> {
        decode_bincode::<Envelope, FirstEnvelope>(b)
    }

    /// Bytes the submission carries (sources, stdin, args): what a queue full of them costs.
    pub fn weight(&self) -> usize {
        let s = &self.submission;
        s.files.iter().map(|f| f.content.len()).sum::<usize>()
            + s.source.as_ref().map_or(0, String::len)
            + s.stdin.len()
            + s.args.iter().map(String::len).sum::<usize>()
    }
}

/// An envelope as journaled before the submission's layout grew.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
pub(crate) struct FirstEnvelope {
    id: String,
    submission: FirstLayout,
    created_at_ms: u64,
}

impl From<FirstEnvelope> for Envelope {
    fn from(e: FirstEnvelope) -> Envelope {
        Envelope {
            id: e.id,
            submission: e.submission.into(),
            created_at_ms: e.created_at_ms,
        }
    }
}

/// How a result is sent to `callback_url`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallbackFormat {
    /// Kiln's result, POSTed.
    #[default]
    Kiln,
    /// Judge0's submission shape (fields base64), PUT, as Judge0 sends it.
    Judge0,
}

/// At most this many compiler options, each at most `MAX_OPTION_BYTES`.
const MAX_COMPILER_OPTIONS: usize = 32;
const MAX_OPTION_BYTES: usize = 128;

/// A compiler option is a flag: it starts with `-` and holds letters, digits and `_+=.,:/-`
/// (so `-O2`, `-std=c++17`, `-Wall`, `-lm`), never a shell metacharacter or a path outside the
/// work dir given on its own.
fn check_compiler_option(o: &str) -> Result<(), String> {
    let ok = o.starts_with('-')
        && o.len() >= 2
        && o.len() <= MAX_OPTION_BYTES
        && o.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+=.,:/-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "compiler_options: {o:?} is not a flag: each starts with '-' and holds only letters, digits and _+=.,:/- (at most {MAX_OPTION_BYTES} bytes)"
        ))
    }
}

/// The server's defaults and maxima for every limit, plus size bounds on submissions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LimitPolicy {
    pub default: Limits,
    pub maximum: Limits,
    /// Limits of the compile step (languages may raise them with `compile_limits`).
    pub compile: Limits,
    pub max_files: usize,
    pub max_args: usize,
    /// Source files and stdin together, decoded.
    pub max_submission_bytes: usize,
    /// Tests in one test-case set.
    #[serde(default = "default_max_tests")]
    pub max_tests: usize,
    /// Bytes of test output (stdout and stderr of every test together) one result holds; past
    /// it later tests' output is cut, and they say so.
    #[serde(default = "default_max_tests_output")]
    pub max_tests_output_bytes: usize,
}

fn default_max_tests() -> usize {
    100
}

fn default_max_tests_output() -> usize {
    16 << 20
}

impl Default for LimitPolicy {
    fn default() -> Self {
        LimitPolicy {
            default: Limits {
                wall_time_ms: 10_000,
                cpu_time_ms: 5_000,
                memory_bytes: 256 << 20,
                processes: 64,
                output_bytes: 1 << 20,
                file_size_bytes: 16 << 20,
                open_files: 256,
                network: false,
                cpus: 1,
            },
            maximum: Limits {
                wall_time_ms: 60_000,
                cpu_time_ms: 30_000,
                memory_bytes: 2 << 30,
                processes: 512,
                output_bytes: 16 << 20,
                file_size_bytes: 256 << 20,
                open_files: 1024,
                network: false,
                cpus: 4,
            },
            compile: Limits {
                wall_time_ms: 30_000,
                cpu_time_ms: 30_000,
                memory_bytes: 512 << 20,
                processes: 128,
                output_bytes: 64 << 10,
                file_size_bytes: 256 << 20,
                open_files: 1024,
                network: false,
                cpus: 1,
            },
            max_files: 64,
            max_args: 256,
            max_submission_bytes: 32 << 20,
            max_tests: default_max_tests(),
            max_tests_output_bytes: default_max_tests_output(),
        }
    }
}

/// Whether `id` may name a submission: 1 to 128 characters of `A-Z a-z 0-9 - _ . :`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Why a submission cannot run: shown to the user as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Submission {
    /// Checks the submission and turns it into a job for `id`.
    pub fn resolve(
        &self,
        id: &str,
        registry: &Registry,
        policy: &LimitPolicy,
    ) -> Result<Job, Invalid> {
        let lang = registry
            .find(&self.language, self.version.as_deref())
            .map_err(|e| Invalid(e.to_string()))?;
        let limits = self.limits(policy)?;

        // A source given without a name takes the language's default (for Java, its public
        // class's name).
        let default_entry = match lang.entry_point {
            None => lang.entry.clone(),
            Some(_) => {
                let first = self.source.clone().or_else(|| {
                    self.files.first().and_then(|f| {
                        decode(&f.content, f.encoding)
                            .ok()
                            .map(|b| String::from_utf8_lossy(&b).into_owned())
                    })
                });
                EntryPoint::default_file(
                    lang.entry_point,
                    &lang.entry,
                    first.as_deref().unwrap_or(""),
                )
            }
        };
        let mut files = Vec::new();
        if let Some(source) = &self.source {
            files.push(JobFile {
                name: default_entry.clone(),
                content: Bytes(source.as_bytes().to_vec()),
            });
        }
        for (i, f) in self.files.iter().enumerate() {
            let name = match (&f.name, i == 0 && self.source.is_none()) {
                (Some(n), _) => n.clone(),
                (None, true) => default_entry.clone(),
                (None, false) => return Err(Invalid(format!("files[{i}] needs a name"))),
            };
            kiln_wire::rules::check_file_name(&name)
                .map_err(|e| Invalid(format!("files[{i}]: {e}")))?;
            if lang.outputs.contains(&name) {
                return Err(Invalid(format!(
                    "files[{i}]: {name:?} is what {}'s compile step makes; give the file another name",
                    lang.name
                )));
            }
            let content = decode(&f.content, f.encoding)
                .map_err(|e| Invalid(format!("files[{i}] ({name}): {e}")))?;
            files.push(JobFile {
                name,
                content: Bytes(content),
            });
        }
        if let Some(url) = &self.callback_url {
            let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
            if !scheme_ok || url.len() > 2048 || url.chars().any(char::is_whitespace) {
                return Err(Invalid(
                    "callback_url must be an http:// or https:// URL of at most 2048 characters"
                        .into(),
                ));
            }
        }
        if files.is_empty() {
            return Err(Invalid(
                "the submission has no source: give \"source\" or \"files\"".into(),
            ));
        }
        if files.len() > policy.max_files {
            return Err(Invalid(format!(
                "{} files is over the maximum of {}",
                files.len(),
                policy.max_files
            )));
        }
        let mut names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        names.sort();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(Invalid("two files have the same name".into()));
        }
        if self.args.len() > policy.max_args {
            return Err(Invalid(format!(
                "{} args is over the maximum of {}",
                self.args.len(),
                policy.max_args
            )));
        }
        let total: usize = files.iter().map(|f| f.content.len()).sum::<usize>()
            + self.stdin.len()
            + self.args.iter().map(String::len).sum::<usize>();
        if total > policy.max_submission_bytes {
            return Err(Invalid(format!(
                "files, stdin and args come to {total} bytes, over the maximum of {}",
                policy.max_submission_bytes
            )));
        }
        // The entry point: the first file, under the name it was given, is what the language
        // compiles and runs.
        if files[0].name.starts_with('-') {
            return Err(Invalid(format!(
                "the entry file's name {:?} starts with '-', which its {} toolchain would read as an option",
                files[0].name, lang.name
            )));
        }
        let source = match lang.entry_point {
            Some(_) => String::from_utf8_lossy(&files[0].content.0).into_owned(),
            None => String::new(),
        };
        let names = EntryNames::of(&files[0].name, &source, lang.entry_point);
        if names.header_line && lang.as_script.is_some() {
            files[0].content.0.insert(0, b'\n');
        }
        let (compile, mut run_argv) = lang.commands_for(&names, limits.memory_bytes);
        run_argv.extend(self.args.iter().cloned());
        let compile = compile.map(|argv| Stage {
            argv,
            limits: raise(&policy.compile, &lang.compile_limits),
        });
        let compile = match (compile, self.compiler_options.is_empty()) {
            (c, true) => c,
            (None, false) => {
                return Err(Invalid(format!(
                    "compiler_options: {} is not compiled",
                    lang.name
                )))
            }
            (Some(mut c), false) => {
                let through_shell = c.argv.first().is_some_and(|a| {
                    let base = a.rsplit('/').next().unwrap_or(a);
                    matches!(base, "sh" | "bash" | "dash" | "env")
                });
                if through_shell {
                    return Err(Invalid(format!(
                        "compiler_options: {} compiles through a script, which takes no options",
                        lang.name
                    )));
                }
                if self.compiler_options.len() > MAX_COMPILER_OPTIONS {
                    return Err(Invalid(format!(
                        "compiler_options: {} options is over the maximum of {MAX_COMPILER_OPTIONS}",
                        self.compiler_options.len()
                    )));
                }
                for o in &self.compiler_options {
                    check_compiler_option(o).map_err(Invalid)?;
                }
                c.argv.splice(1..1, self.compiler_options.iter().cloned());
                Some(c)
            }
        };
        Ok(Job {
            id: id.to_string(),
            language: lang.name.clone(),
            files,
            compile,
            run: Stage {
                argv: run_argv,
                limits: raise(&limits, &lang.run_limits),
            },
            env: lang.env.clone(),
            stdin: Bytes(self.stdin.as_bytes().to_vec()),
            expected_output: self
                .expected_output
                .as_ref()
                .map(|s| Bytes(s.as_bytes().to_vec())),
            merge_stderr: self.redirect_stderr_to_stdout,
            prebuilt: None,
            keep_artifact: false,
            interactive: false,
            warm_cache: lang
                .warm_cache
                .as_ref()
                .map(|(_, path)| crate::job::WarmUse {
                    dir: format!("{}-{}", lang.name, lang.version),
                    path: path.display().to_string(),
                }),
        })
    }

    /// A test-case set's jobs, one per test in test order: each is the submission with the
    /// test's stdin, expected output, args and limits. Every test is checked now.
    pub fn resolve_tests(
        &self,
        id: &str,
        registry: &Registry,
        policy: &LimitPolicy,
    ) -> Result<Vec<Job>, Invalid> {
        if self.tests.len() > policy.max_tests {
            return Err(Invalid(format!(
                "{} tests is over the maximum of {}",
                self.tests.len(),
                policy.max_tests
            )));
        }
        let stdin_total: usize = self.tests.iter().map(|t| t.stdin.len()).sum();
        if stdin_total > policy.max_submission_bytes {
            return Err(Invalid(format!(
                "the tests' stdin comes to {stdin_total} bytes, over the maximum of {}",
                policy.max_submission_bytes
            )));
        }
        self.tests
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let one = Submission {
                    stdin: t.stdin.clone(),
                    expected_output: t.expected_output.clone(),
                    args: t.args.clone().unwrap_or_else(|| self.args.clone()),
                    limits: t.limits.clone().unwrap_or_else(|| self.limits.clone()),
                    tests: Vec::new(),
                    ..self.clone()
                };
                one.resolve(id, registry, policy)
                    .map_err(|e| Invalid(format!("tests[{i}]: {}", e.0)))
            })
            .collect()
    }

    /// The run limits: requested values, or defaults; each checked against the maximum.
    pub fn limits(&self, policy: &LimitPolicy) -> Result<Limits, Invalid> {
        let (d, m, r) = (&policy.default, &policy.maximum, &self.limits);
        fn pick<T: PartialOrd + Copy + std::fmt::Display>(
            name: &str,
            req: Option<T>,
            def: T,
            max: T,
        ) -> Result<T, Invalid> {
            match req {
                Some(v) if v > max => Err(Invalid(format!(
                    "limits.{name} = {v} is over the server maximum of {max}"
                ))),
                Some(v) => Ok(v),
                None => Ok(if def > max { max } else { def }),
            }
        }
        let limits = Limits {
            wall_time_ms: pick(
                "wall_time_ms",
                r.wall_time_ms,
                d.wall_time_ms,
                m.wall_time_ms,
            )?,
            cpu_time_ms: pick("cpu_time_ms", r.cpu_time_ms, d.cpu_time_ms, m.cpu_time_ms)?,
            memory_bytes: pick(
                "memory_bytes",
                r.memory_bytes,
                d.memory_bytes,
                m.memory_bytes,
            )?,
            processes: pick("processes", r.processes, d.processes, m.processes)?,
            output_bytes: pick(
                "output_bytes",
                r.output_bytes,
                d.output_bytes,
                m.output_bytes,
            )?,
            file_size_bytes: pick(
                "file_size_bytes",
                r.file_size_bytes,
                d.file_size_bytes,
                m.file_size_bytes,
            )?,
            cpus: pick("cpus", r.cpus, d.cpus, m.cpus)?,
            open_files: d.open_files,
            // Networking is the operator's choice (it decides how pods are made), not a request's.
            network: d.network,
        };
        for (name, v) in [
            ("wall_time_ms", limits.wall_time_ms),
            ("cpu_time_ms", limits.cpu_time_ms),
            ("memory_bytes", limits.memory_bytes),
        ] {
            if v == 0 {
                return Err(Invalid(format!("limits.{name} must be above 0")));
            }
        }
        if limits.memory_bytes < 4 << 20 {
            return Err(Invalid(
                "limits.memory_bytes must be at least 4194304 (4 MiB)".into(),
            ));
        }
        if limits.processes == 0 {
            return Err(Invalid("limits.processes must be at least 1".into()));
        }
        if limits.cpus == 0 {
            return Err(Invalid("limits.cpus must be at least 1".into()));
        }
        Ok(limits)
    }
}

/// A language may need more than the defaults (a JVM's threads): its floors raise the limits.
fn raise(base: &Limits, floor: &LimitOverrides) -> Limits {
    let mut l = base.clone();
    if let Some(v) = floor.wall_time_ms {
        l.wall_time_ms = l.wall_time_ms.max(v);
    }
    if let Some(v) = floor.cpu_time_ms {
        l.cpu_time_ms = l.cpu_time_ms.max(v);
    }
    if let Some(v) = floor.memory_bytes {
        l.memory_bytes = l.memory_bytes.max(v);
    }
    if let Some(v) = floor.processes {
        l.processes = l.processes.max(v);
    }
    if let Some(v) = floor.cpus {
        l.cpus = l.cpus.max(v);
    }
    l
}

fn decode(content: &str, encoding: Encoding) -> Result<Vec<u8>, String> {
    match encoding {
        Encoding::Utf8 => Ok(content.as_bytes().to_vec()),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(content.trim())
            .map_err(|e| format!("invalid base64: {e}")),
        Encoding::Hex => {
            let s = content.trim().as_bytes();
            if s.len() % 2 != 0 {
                return Err("invalid hex: odd number of digits".into());
            }
            s.chunks(2)
                .enumerate()
                .map(|(i, pair)| {
                    std::str::from_utf8(pair)
                        .ok()
                        .and_then(|p| u8::from_str_radix(p, 16).ok())
                        .ok_or_else(|| format!("invalid hex at offset {}", i * 2))
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    fn first() -> FirstLayout {
        FirstLayout {
            schema_version: Some(1),
            id: Some("old-1".into()),
            language: "python".into(),
            version: None,
            files: Vec::new(),
            source: Some("print(1)".into()),
            stdin: "in".into(),
            args: vec!["a".into()],
            expected_output: None,
            limits: RequestedLimits::default(),
            callback_url: Some("https://example.com/hook".into()),
            redirect_stderr_to_stdout: true,
        }
    }

    #[test]
    fn bincode_of_the_first_layout_is_still_read() {
        let c = bincode::config::standard();
        let old = bincode::serde::encode_to_vec(first(), c).unwrap();
        let s = Submission::from_bincode(&old).unwrap();
        assert_eq!(s.id.as_deref(), Some("old-1"));
        assert_eq!(s.source.as_deref(), Some("print(1)"));
        assert!(s.redirect_stderr_to_stdout);
        assert!(s.compiler_options.is_empty());
        assert_eq!(s.callback_format, CallbackFormat::Kiln);

        // A journaled envelope of that time, whose submission sits before created_at_ms.
        let env = FirstEnvelope {
            id: "old-1".into(),
            submission: first(),
            created_at_ms: 1_796_000_000_000,
        };
        let old = bincode::serde::encode_to_vec(&env, c).unwrap();
        let e = Envelope::from_bincode(&old).unwrap();
        assert_eq!(e.created_at_ms, 1_796_000_000_000);
        assert_eq!(e.submission.stdin, "in");

        // The current layout round-trips with its new fields.
        let mut now: Submission = first().into();
        now.compiler_options = vec!["-O2".into()];
        now.callback_format = CallbackFormat::Judge0;
        let bytes = bincode::serde::encode_to_vec(&now, c).unwrap();
        let back = Submission::from_bincode(&bytes).unwrap();
        assert_eq!(back.compiler_options, ["-O2"]);
        assert_eq!(back.callback_format, CallbackFormat::Judge0);
        assert!(Submission::from_bincode(&bytes[..bytes.len() - 1]).is_err());
    }
}
