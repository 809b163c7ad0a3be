//! The workload file: programs with weights and the status each must end in, expanded into the
//! concrete submissions a run draws from.

use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadFile {
    #[serde(default)]
    pub program: Vec<ProgramSpec>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramSpec {
    pub name: String,
    #[serde(default = "one")]
    pub weight: u32,
    /// A language name, or `*` for hello world in every language the target offers.
    pub language: Option<String>,
    pub source: Option<String>,
    #[serde(default)]
    pub stdin: String,
    pub limits: Option<Value>,
    /// The status it must end in; `a|b` allows either; `invalid` means refused (HTTP 4xx, a
    /// dead letter, or a `rejected` result).
    pub expect: String,
    /// The exact stdout an accepted run must print.
    pub expect_stdout: Option<String>,
    /// A raw request body, sent as is (malformed submissions).
    pub raw: Option<String>,
    /// Whether the floor run (programs spawned bare on the host) includes it.
    #[serde(default = "yes")]
    pub floor: bool,
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

/// One concrete submission kind.
#[derive(Clone, Debug)]
pub struct Item {
    pub name: String,
    pub weight: u32,
    /// The submission without its id (JSON), or the raw bytes for malformed ones.
    pub body: Body,
    pub expect: Vec<String>,
    pub expect_stdout: Option<String>,
    pub floor: bool,
}

#[derive(Clone, Debug)]
pub enum Body {
    Json(Value),
    Raw(Vec<u8>),
}

impl Item {
    /// The bytes to send for submission `id`.
    pub fn payload(&self, id: &str) -> Vec<u8> {
        match &self.body {
            Body::Json(v) => {
                let mut v = v.clone();
                v["id"] = json!(id);
                serde_json::to_vec(&v).expect("JSON encodes")
            }
            Body::Raw(b) => b.clone(),
        }
    }

    /// Whether `status` (a result status, `http_4xx`, or `dead_letter`) is what this item must
    /// end in.
    pub fn accepts(&self, status: &str) -> bool {
        self.expect.iter().any(|e| {
            e == status
                || (e == "invalid"
                    && (status == "rejected" || status == "dead_letter" || status == "http_4xx"))
        })
    }
}

/// Hello world in the languages Kiln ships, printing `hello`.
pub fn hello(language: &str) -> Option<&'static str> {
    Some(match language {
        "python" => "print('hello')",
        "c" => "#include <stdio.h>\nint main(void) { puts(\"hello\"); return 0; }",
        "cpp" => "#include <iostream>\nint main() { std::cout << \"hello\" << std::endl; }",
        "rust" => "fn main() { println!(\"hello\"); }",
        "go" => "package main\nimport \"fmt\"\nfunc main() { fmt.Println(\"hello\") }",
        "java" => "public class Main { public static void main(String[] a) { System.out.println(\"hello\"); } }",
        "javascript" => "console.log('hello')",
        "bash" => "echo hello",
        _ => return None,
    })
}

impl WorkloadFile {
    pub fn parse(text: &str) -> Result<WorkloadFile, String> {
        let w: WorkloadFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if w.program.is_empty() {
            return Err("the workload has no [[program]]".into());
        }
        Ok(w)
    }

    /// The concrete items, `*` expanded over `languages` (those with a known hello world).
    pub fn items(&self, languages: &[String]) -> Result<Vec<Item>, String> {
        let mut items = Vec::new();
        for p in &self.program {
            let expect: Vec<String> = p.expect.split('|').map(|s| s.trim().to_string()).collect();
            if let Some(raw) = &p.raw {
                items.push(Item {
                    name: p.name.clone(),
                    weight: p.weight,
                    body: Body::Raw(raw.clone().into_bytes()),
                    expect,
                    expect_stdout: None,
                    floor: false,
                });
                continue;
            }
            let language = p
                .language
                .clone()
                .ok_or_else(|| format!("program {}: no language and no raw body", p.name))?;
            let pairs: Vec<(String, String, Option<String>)> = if language == "*" {
                let known: Vec<&String> = languages.iter().filter(|l| hello(l).is_some()).collect();
                if known.is_empty() {
                    return Err(format!(
                        "program {}: the target offers no language with a hello world here",
                        p.name
                    ));
                }
                known
                    .into_iter()
                    .map(|l| {
                        (
                            l.clone(),
                            hello(l).unwrap().to_string(),
                            Some("hello\n".into()),
                        )
                    })
                    .collect()
            } else {
                let source = p
                    .source
                    .clone()
                    .ok_or_else(|| format!("program {}: no source", p.name))?;
                vec![(language, source, p.expect_stdout.clone())]
            };
            let share = (p.weight / pairs.len() as u32).max(1);
            for (language, source, expect_stdout) in pairs {
                let mut body = json!({"language": language, "source": source, "stdin": p.stdin});
                if let Some(l) = &p.limits {
                    body["limits"] = l.clone();
                }
                items.push(Item {
                    name: if p.language.as_deref() == Some("*") {
                        format!("{}-{language}", p.name)
                    } else {
                        p.name.clone()
                    },
                    weight: share,
                    body: Body::Json(body),
                    expect: expect.clone(),
                    expect_stdout,
                    floor: p.floor,
                });
            }
        }
        Ok(items)
    }
}

/// Draws items by weight, reproducibly (xorshift from a seed).
pub struct Mix {
    items: Vec<Item>,
    total: u64,
    state: u64,
}

impl Mix {
    pub fn new(items: Vec<Item>, seed: u64) -> Mix {
        let total = items.iter().map(|i| i.weight as u64).sum::<u64>().max(1);
        Mix {
            items,
            total,
            state: seed | 1,
        }
    }

    pub fn next_f64(&mut self) -> f64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn draw(&mut self) -> usize {
        let mut at = (self.next_f64() * self.total as f64) as u64;
        for (i, item) in self.items.iter().enumerate() {
            if at < item.weight as u64 {
                return i;
            }
            at -= item.weight as u64;
        }
        self.items.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_workloads_parse_and_expand() {
        for file in [
            "default.toml",
            "smoke.toml",
            "benign.toml",
            "distributed.toml",
        ] {
            let path = format!("{}/workloads/{file}", env!("CARGO_MANIFEST_DIR"));
            let w = WorkloadFile::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let items = w
                .items(&["python".into(), "c".into(), "cpp".into(), "bash".into()])
                .unwrap();
            assert!(items.len() >= 4, "{file}: {items:?}");
        }
    }

    #[test]
    fn weights_decide_the_mix() {
        let items = WorkloadFile::parse(
            "[[program]]\nname='a'\nlanguage='python'\nsource='1'\nweight=9\nexpect='accepted'\n[[program]]\nname='b'\nlanguage='python'\nsource='2'\nweight=1\nexpect='accepted'\n",
        )
        .unwrap()
        .items(&[])
        .unwrap();
        let mut mix = Mix::new(items, 7);
        let a = (0..10_000).filter(|_| mix.draw() == 0).count();
        assert!((8_700..9_300).contains(&a), "{a} of 10000 were a");
    }

    #[test]
    fn invalid_means_refused_in_any_form() {
        let item = Item {
            name: "x".into(),
            weight: 1,
            body: Body::Raw(vec![]),
            expect: vec!["invalid".into()],
            expect_stdout: None,
            floor: false,
        };
        for s in ["rejected", "dead_letter", "http_4xx"] {
            assert!(item.accepts(s));
        }
        assert!(!item.accepts("accepted"));
    }
}
