//! Judge0 CE 1.13.1 as its clients see it: its language ids, its statuses, its submission JSON
//! (with `?fields=` and base64), its multi-file archives, and its callbacks. The HTTP routes are
//! in `api/judge0.rs`; this module has no web framework in it, so the result publisher can send
//! Judge0-shaped callbacks too.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::languages::Registry;
use crate::outcome::Failure;
use crate::result::RunResult;

/// The Judge0 version clients read from `/about` to pick their language table.
pub const VERSION: &str = "1.13.1";

/// Judge0 CE 1.13.1's languages: id, the name Judge0 gives it (without version), and the Kiln
/// language that runs it (`None`: no toolchain for it in any registry this project installs
/// from). Where Judge0 offers several compilers of one language (GCC 7, 8, 9, Clang), each id
/// runs Kiln's single toolchain of that language.
pub const LANGUAGES: &[(u32, &str, Option<&str>)] = &[
    (43, "Plain Text", None),
    (44, "Executable", None),
    (45, "Assembly (NASM)", Some("assembly")),
    (46, "Bash", Some("bash")),
    (47, "Basic", Some("basic")),
    (48, "C (GCC)", Some("c")),
    (49, "C (GCC)", Some("c")),
    (50, "C (GCC)", Some("c")),
    (51, "C# (Mono)", Some("csharp")),
    (52, "C++ (GCC)", Some("cpp")),
    (53, "C++ (GCC)", Some("cpp")),
    (54, "C++ (GCC)", Some("cpp")),
    (55, "Common Lisp (SBCL)", Some("commonlisp")),
    (56, "D (GDC)", Some("d")),
    (57, "Elixir", Some("elixir")),
    (58, "Erlang (OTP)", Some("erlang")),
    (59, "Fortran (GFortran)", Some("fortran")),
    (60, "Go", Some("go")),
    (61, "Haskell (GHC)", Some("haskell")),
    (62, "Java (OpenJDK)", Some("java")),
    (63, "JavaScript (Node.js)", Some("javascript")),
    (64, "Lua", Some("lua")),
    (65, "OCaml", Some("ocaml")),
    (66, "Octave", Some("octave")),
    (67, "Pascal (FPC)", Some("pascal")),
    (68, "PHP", Some("php")),
    (69, "Prolog (SWI-Prolog)", Some("prolog")),
    (70, "Python 2", None),
    (71, "Python", Some("python")),
    (72, "Ruby", Some("ruby")),
    (73, "Rust", Some("rust")),
    (74, "TypeScript", Some("typescript")),
    (75, "C (GCC, for Clang's id)", Some("c")),
    (76, "C++ (GCC, for Clang's id)", Some("cpp")),
    (77, "COBOL (GnuCOBOL)", Some("cobol")),
    (78, "Kotlin", Some("kotlin")),
    (79, "Objective-C (GCC)", Some("objective-c")),
    (80, "R", Some("r")),
    (81, "Scala", Some("scala")),
    (82, "SQL (SQLite)", Some("sqlite")),
    (83, "Swift", None),
    (84, "Visual Basic.Net", None),
    (85, "Perl", Some("perl")),
    (86, "Clojure", Some("clojure")),
    (87, "F#", None),
    (88, "Groovy", Some("groovy")),
    (89, "Multi-file program", Some("multi-file")),
];

/// Why a Judge0 id has no Kiln language.
fn missing_reason(id: u32) -> &'static str {
    match id {
        43 => "plain text output is not a program Kiln runs",
        44 => "Kiln runs programs from source, not uploaded executables",
        70 => "Python 2 is in no registry Kiln installs from (Debian 12 dropped it)",
        83 => "Swift is in no registry Kiln installs from",
        84 => "vbnc is in no registry Kiln installs from",
        87 => "the .NET SDK for F# is in no registry Kiln installs from",
        _ => "it is not in Kiln's language registry",
    }
}

/// What a Judge0 language id runs as here.
pub enum Lookup<'a> {
    Served(&'a crate::languages::Language),
    /// Judge0 has the id; this Kiln cannot run it (the reason).
    NotServed(String),
    /// Judge0 CE has no such id.
    Unknown,
}

pub fn lookup(registry: &Registry, id: u32) -> Lookup<'_> {
    let Some(&(_, name, kiln)) = LANGUAGES.iter().find(|(i, _, _)| *i == id) else {
        return Lookup::Unknown;
    };
    match kiln {
        None => Lookup::NotServed(format!("{name}: {}", missing_reason(id))),
        Some(k) => match registry.available.iter().find(|l| l.name == k) {
            Some(l) => Lookup::Served(l),
            None => Lookup::NotServed(format!(
                "{name}: this host has no toolchain for Kiln's {k} (scripts/runtimes install {k})"
            )),
        },
    }
}

/// The id that stands for a Kiln language (the newest of Judge0's ids for it).
pub fn id_of(language: &str) -> Option<u32> {
    LANGUAGES
        .iter()
        .filter(|(id, _, k)| *k == Some(language) && !matches!(id, 75 | 76))
        .map(|(id, _, _)| *id)
        .max()
}

/// `Name (version)`, as Judge0 names its languages.
pub fn display_name(id: u32, l: &crate::languages::Language) -> String {
    let name = LANGUAGES
        .iter()
        .find(|(i, _, _)| *i == id)
        .map(|(_, n, _)| *n)
        .unwrap_or(&l.name);
    match name.find(" (") {
        Some(i) if name.ends_with(')') => {
            format!(
                "{} ({} {})",
                &name[..i],
                &name[i + 2..name.len() - 1],
                l.version
            )
        }
        _ => format!("{name} ({})", l.version),
    }
}

/// Judge0's statuses, id and description.
pub const STATUSES: &[(u8, &str)] = &[
    (1, "In Queue"),
    (2, "Processing"),
    (3, "Accepted"),
    (4, "Wrong Answer"),
    (5, "Time Limit Exceeded"),
    (6, "Compilation Error"),
    (7, "Runtime Error (SIGSEGV)"),
    (8, "Runtime Error (SIGXFSZ)"),
    (9, "Runtime Error (SIGFPE)"),
    (10, "Runtime Error (SIGABRT)"),
    (11, "Runtime Error (NZEC)"),
    (12, "Runtime Error (Other)"),
    (13, "Internal Error"),
    (14, "Exec Format Error"),
];

pub fn status_json(id: u8) -> Value {
    let description = STATUSES
        .iter()
        .find(|(i, _)| *i == id)
        .map(|(_, d)| *d)
        .unwrap_or("Internal Error");
    json!({"id": id, "description": description})
}

/// Judge0's id for a finished result. An exec format error (the kernel refused the program
/// file) has its own id.
pub fn status_id(result: &RunResult) -> u8 {
    let o = &result.outcome;
    if o.failure() == Some(Failure::NotExecutable) {
        return 14;
    }
    o.status.judge0_id(o.signal)
}

/// Every field a Judge0 submission has. Those Kiln does not keep once a submission has run (its
/// request fields) are never returned.
pub const ALL_FIELDS: &[&str] = &[
    "token",
    "source_code",
    "language_id",
    "compiler_options",
    "command_line_arguments",
    "stdin",
    "expected_output",
    "cpu_time_limit",
    "cpu_extra_time",
    "wall_time_limit",
    "memory_limit",
    "stack_limit",
    "max_processes_and_or_threads",
    "enable_per_process_and_thread_time_limit",
    "enable_per_process_and_thread_memory_limit",
    "max_file_size",
    "redirect_stderr_to_stdout",
    "enable_network",
    "number_of_runs",
    "additional_files",
    "callback_url",
    "stdout",
    "stderr",
    "compile_output",
    "message",
    "exit_code",
    "exit_signal",
    "status",
    "created_at",
    "finished_at",
    "time",
    "wall_time",
    "memory",
    "language",
    "status_id",
    "post_execution_filesystem",
];

/// What Judge0 returns when `fields` is not given.
pub const DEFAULT_FIELDS: &[&str] = &[
    "token",
    "stdout",
    "stderr",
    "compile_output",
    "message",
    "status",
    "time",
    "memory",
];

/// Fields Kiln returns (the rest of `ALL_FIELDS` describe the request, which is not kept).
const KEPT_FIELDS: &[&str] = &[
    "token",
    "language_id",
    "stdout",
    "stderr",
    "compile_output",
    "message",
    "exit_code",
    "exit_signal",
    "status",
    "status_id",
    "created_at",
    "finished_at",
    "time",
    "wall_time",
    "memory",
    "language",
];

/// The fields a request asked for: `*` for all, else a comma-separated list, every name known.
pub fn parse_fields(fields: Option<&str>) -> Result<Vec<&'static str>, String> {
    let Some(f) = fields.map(str::trim).filter(|f| !f.is_empty()) else {
        return Ok(DEFAULT_FIELDS.to_vec());
    };
    if f == "*" {
        return Ok(KEPT_FIELDS.to_vec());
    }
    let mut out = Vec::new();
    let mut invalid = Vec::new();
    for name in f.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match ALL_FIELDS.iter().find(|a| **a == name) {
            Some(a) => out.push(*a),
            None => invalid.push(name.to_string()),
        }
    }
    if invalid.is_empty() {
        Ok(out)
    } else {
        Err(format!("invalid fields: [{}]", invalid.join(", ")))
    }
}

/// The words Judge0 uses when output is not UTF-8 and base64 was not asked for.
pub const NOT_UTF8: &str = "some attributes for this submission cannot be converted to UTF-8, use base64_encoded=true query parameter";

/// Where a submission stands, as the JSON reader needs it.
pub enum Standing<'a> {
    Queued,
    Running,
    Done(&'a RunResult),
}

fn seconds(ms: u64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

/// A submission as Judge0 returns it, with just `fields`. Err when a text field is not UTF-8 and
/// `base64` is off (Judge0's 400).
pub fn submission(
    token: &str,
    standing: Standing<'_>,
    fields: &[&str],
    base64: bool,
    registry: &Registry,
) -> Result<Value, &'static str> {
    let mut m = Map::new();
    for &f in fields {
        let v = match (&standing, f) {
            (_, "token") => json!(token),
            (Standing::Queued, "status") => status_json(1),
            (Standing::Running, "status") => status_json(2),
            (Standing::Queued, "status_id") => json!(1),
            (Standing::Running, "status_id") => json!(2),
            (Standing::Queued | Standing::Running, f) if KEPT_FIELDS.contains(&f) => Value::Null,
            (Standing::Done(r), f) => match done_field(r, f, base64, registry)? {
                Some(v) => v,
                None => continue,
            },
            _ => continue,
        };
        m.insert(f.to_string(), v);
    }
    Ok(Value::Object(m))
}

fn done_field(
    r: &RunResult,
    f: &str,
    base64: bool,
    registry: &Registry,
) -> Result<Option<Value>, &'static str> {
    let o = &r.outcome;
    let text = |b: &crate::bytes::Bytes| -> Result<Value, &'static str> {
        if b.0.is_empty() {
            // Judge0 sends null, not "", for a stream with nothing in it.
            return Ok(Value::Null);
        }
        if base64 {
            return Ok(json!(base64::engine::general_purpose::STANDARD.encode(&b.0)));
        }
        b.as_utf8().map(|s| json!(s)).ok_or(NOT_UTF8)
    };
    let language_id = id_of(&r.language);
    Ok(Some(match f {
        "stdout" => text(&o.stdout)?,
        "stderr" => text(&o.stderr)?,
        "compile_output" => text(&o.compile_output)?,
        "message" => match &o.message {
            Some(m) if base64 => json!(base64::engine::general_purpose::STANDARD.encode(m)),
            Some(m) => json!(m),
            None => Value::Null,
        },
        "exit_code" => json!(o.exit_code),
        "exit_signal" => json!(o.signal),
        "status" => status_json(status_id(r)),
        "status_id" => json!(status_id(r)),
        "created_at" => json!(timestamp(r.created_at_ms)),
        "finished_at" => json!(timestamp(r.finished_at_ms)),
        "time" => json!(seconds(o.cpu_time_ms)),
        "wall_time" => json!(seconds(o.wall_time_ms)),
        "memory" => json!(o.memory_bytes / 1024),
        "language_id" => json!(language_id),
        "language" => {
            let lang = registry.available.iter().find(|l| l.name == r.language);
            match (language_id, lang) {
                (Some(id), Some(l)) => json!({"id": id, "name": display_name(id, l)}),
                _ => json!({"id": language_id, "name": r.language}),
            }
        }
        _ => return Ok(None),
    }))
}

/// Judge0's timestamp: `2024-01-31T12:00:00.123Z`.
fn timestamp(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

/// The body Judge0 PUTs to a callback URL: the default fields, base64.
pub fn callback_body(r: &RunResult) -> Value {
    submission(
        &r.id,
        Standing::Done(r),
        DEFAULT_FIELDS,
        true,
        &Registry::default(),
    )
    .unwrap_or_default()
}

/// Splits a command line as a POSIX shell would split words: blanks separate, single quotes
/// keep everything, double quotes keep all but `\"` and `\\`, a backslash escapes one character.
/// No expansion of any kind.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("an unclosed single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("an unclosed double quote".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("an unclosed double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => cur.push(c),
                    None => return Err("a backslash at the end".into()),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// The files of a zip archive (stored or deflated entries; folders skipped), at most `limit`
/// bytes unpacked in all and `max_files` files. Names lose a leading `./`.
pub fn unzip(
    data: &[u8],
    limit: usize,
    max_files: usize,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let u16_at = |at: usize| -> Result<usize, String> {
        data.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
            .ok_or_else(|| "the archive is cut short".to_string())
    };
    let u32_at = |at: usize| -> Result<usize, String> {
        data.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| "the archive is cut short".to_string())
    };
    // The end-of-central-directory record: within the last 64 KiB + 22 bytes.
    let lowest = data.len().saturating_sub(65_557);
    let end = (lowest..data.len().saturating_sub(21))
        .rev()
        .find(|&i| data[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .ok_or("not a zip archive (no end of central directory)")?;
    let entries = u16_at(end + 10)?;
    let mut at = u32_at(end + 16)?;
    if entries > max_files {
        return Err(format!(
            "the archive holds {entries} entries, over the maximum of {max_files}"
        ));
    }
    let mut files = Vec::new();
    let mut total = 0usize;
    for _ in 0..entries {
        if u32_at(at)? != 0x0201_4b50 {
            return Err("a central directory entry is damaged".into());
        }
        let method = u16_at(at + 10)?;
        let compressed = u32_at(at + 20)?;
        let size = u32_at(at + 24)?;
        let name_len = u16_at(at + 28)?;
        let extra_len = u16_at(at + 30)?;
        let comment_len = u16_at(at + 32)?;
        let local = u32_at(at + 42)?;
        let name = data
            .get(at + 46..at + 46 + name_len)
            .ok_or("the archive is cut short")?;
        let name = String::from_utf8(name.to_vec())
            .map_err(|_| "a file name in the archive is not UTF-8".to_string())?;
        at += 46 + name_len + extra_len + comment_len;
        if name.ends_with('/') {
            continue;
        }
        total = total.saturating_add(size);
        if total > limit {
            return Err(format!("the archive unpacks to over {limit} bytes"));
        }
        if u32_at(local)? != 0x0403_4b50 {
            return Err(format!("the entry of {name} is damaged"));
        }
        let start = local + 30 + u16_at(local + 26)? + u16_at(local + 28)?;
        let raw = data
            .get(start..start + compressed)
            .ok_or("the archive is cut short")?;
        let content = match method {
            0 => raw.to_vec(),
            8 => miniz_oxide::inflate::decompress_to_vec_with_limit(raw, size)
                .map_err(|e| format!("{name} does not inflate: {e:?}"))?,
            m => {
                return Err(format!(
                    "{name} uses compression method {m}; only stored and deflate are read"
                ))
            }
        };
        if content.len() != size {
            return Err(format!(
                "{name} unpacks to another size than the archive says"
            ));
        }
        let name = name.trim_start_matches("./").to_string();
        files.push((name, content));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{Outcome, Status};

    #[test]
    fn a_program_file_the_kernel_will_not_execute_has_status_14_and_other_start_failures_13() {
        let result = |e: i32| RunResult {
            id: "t".into(),
            language: "c".into(),
            outcome: Outcome::failed(
                Status::InternalError,
                Failure::could_not_start("program", &std::io::Error::from_raw_os_error(e)),
            ),
            attempts: 1,
            created_at_ms: 0,
            finished_at_ms: 0,
        };
        assert_eq!(status_id(&result(libc::ENOEXEC)), 14);
        assert_eq!(status_id(&result(libc::ENOENT)), 13);
    }

    #[test]
    fn words_split_as_a_shell_would_without_expanding() {
        assert_eq!(
            split_words(r#"a  'b c' "d \"e\" $f" g\ h"#).unwrap(),
            vec!["a", "b c", "d \"e\" $f", "g h"]
        );
        assert_eq!(split_words("").unwrap(), Vec::<String>::new());
        assert!(split_words("'open").is_err());
    }

    #[test]
    fn fields_are_checked_and_star_means_what_kiln_keeps() {
        assert_eq!(parse_fields(None).unwrap(), DEFAULT_FIELDS);
        assert!(parse_fields(Some("*")).unwrap().contains(&"exit_code"));
        assert_eq!(
            parse_fields(Some("stdout,nope")).unwrap_err(),
            "invalid fields: [nope]"
        );
    }

    #[test]
    fn every_served_id_names_a_kiln_language_of_the_shipped_registry() {
        let shipped: toml::Value =
            toml::from_str(include_str!("../config/languages.toml")).unwrap();
        let names: Vec<&str> = shipped["language"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap())
            .collect();
        for (id, _, k) in LANGUAGES {
            if let Some(k) = k {
                assert!(
                    names.contains(k),
                    "id {id} runs {k}, which is not in the registry"
                );
            }
        }
    }
}
