//! Every submission sent and every result seen, and the figures that follow from them: lost,
//! duplicated, wrong status, latency from the intended send time (so that slow answers cannot
//! hide latency), throughput over time.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::workload::Item;

pub struct Ledger {
    pub start: Instant,
    pub warmup: Duration,
    items: Vec<Item>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sent: HashMap<String, Sent>,
    results: HashMap<String, Vec<Got>>,
    /// Committed results per id on the results topic, whoever submitted them.
    on_topic: HashMap<String, u32>,
    /// Results for ids this run never sent (another client's, or a bug).
    strangers: u64,
}

struct Sent {
    item: usize,
    intended: Duration,
    /// Submitted to Kafka: its result is the one read from the results topic.
    via_kafka: bool,
}

#[derive(Clone)]
struct Got {
    at: Duration,
    status: String,
    stdout: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Wrong {
    pub id: String,
    pub program: String,
    pub expected: String,
    pub got: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProgramFigures {
    pub program: String,
    pub sent: u64,
    pub statuses: BTreeMap<String, u64>,
}

/// The figures of one run of one target.
#[derive(Clone, Debug, Serialize)]
pub struct Figures {
    pub sent: u64,
    pub results: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub wrong_status: u64,
    pub unexpected_results: u64,
    pub throughput_per_s: f64,
    pub latency_ms: Percentiles,
    /// (percentile, latency ms) for the distribution chart.
    pub distribution: Vec<(f64, f64)>,
    /// Results per second, second by second from the start.
    pub throughput_over_time: Vec<(u64, u64)>,
    pub programs: Vec<ProgramFigures>,
    pub wrong: Vec<Wrong>,
}

impl Ledger {
    pub fn new(items: Vec<Item>, warmup: Duration) -> Ledger {
        Ledger {
            start: Instant::now(),
            warmup,
            items,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn item(&self, i: usize) -> &Item {
        &self.items[i]
    }

    /// Submission `id` of item `item` was meant to leave at `intended` (since the start).
    pub fn sent(&self, id: &str, item: usize, intended: Duration, via_kafka: bool) {
        self.inner.lock().unwrap().sent.insert(
            id.to_string(),
            Sent {
                item,
                intended,
                via_kafka,
            },
        );
    }

    /// A committed result on the results topic: counted (a second one is a duplicate), and
    /// recorded as the result of a submission that went through Kafka.
    pub fn read_on_topic(&self, id: &str, status: &str, stdout: Option<String>) {
        let via_kafka = {
            let mut inner = self.inner.lock().unwrap();
            *inner.on_topic.entry(id.to_string()).or_default() += 1;
            inner.sent.get(id).map(|s| s.via_kafka)
        };
        match via_kafka {
            Some(true) => self.got(id, status, stdout),
            Some(false) => {}
            None => self.inner.lock().unwrap().strangers += 1,
        }
    }

    /// A result (or refusal) for `id` arrived now.
    pub fn got(&self, id: &str, status: &str, stdout: Option<String>) {
        let at = self.start.elapsed();
        let mut inner = self.inner.lock().unwrap();
        if !inner.sent.contains_key(id) {
            inner.strangers += 1;
            return;
        }
        inner.results.entry(id.to_string()).or_default().push(Got {
            at,
            status: status.to_string(),
            stdout,
        });
    }

    /// Sent ids with no result yet.
    pub fn outstanding(&self) -> usize {
        let inner = self.inner.lock().unwrap();
        inner
            .sent
            .keys()
            .filter(|id| !inner.results.contains_key(*id))
            .count()
    }

    pub fn has_result(&self, id: &str) -> bool {
        self.inner.lock().unwrap().results.contains_key(id)
    }

    pub fn figures(&self) -> Figures {
        self.figures_of(|_| true)
    }

    /// The figures of the submissions whose item `keep` says yes to (e.g. those the floor also
    /// runs, for like-for-like ratios).
    pub fn figures_of(&self, keep: impl Fn(&Item) -> bool) -> Figures {
        let inner = self.inner.lock().unwrap();
        let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
        let mut per_second: BTreeMap<u64, u64> = BTreeMap::new();
        let mut programs: BTreeMap<String, ProgramFigures> = BTreeMap::new();
        let (mut lost, mut duplicated, mut wrong_status) = (0, 0, 0);
        let mut wrong = Vec::new();
        let mut measured = 0u64;
        let mut last = Duration::ZERO;
        for (id, sent) in &inner.sent {
            let item = &self.items[sent.item];
            if !keep(item) {
                continue;
            }
            let p = programs
                .entry(item.name.clone())
                .or_insert_with(|| ProgramFigures {
                    program: item.name.clone(),
                    sent: 0,
                    statuses: BTreeMap::new(),
                });
            p.sent += 1;
            let Some(got) = inner.results.get(id) else {
                lost += 1;
                *p.statuses.entry("lost".into()).or_default() += 1;
                continue;
            };
            if got.len() > 1 || inner.on_topic.get(id).is_some_and(|n| *n > 1) {
                duplicated += 1;
            }
            let first = &got[0];
            *p.statuses.entry(first.status.clone()).or_default() += 1;
            let stdout_ok = match (&item.expect_stdout, first.status.as_str(), &first.stdout) {
                (Some(want), "accepted", Some(out)) => out == want,
                (Some(_), "accepted", None) => false,
                _ => true,
            };
            if !item.accepts(&first.status) || !stdout_ok {
                wrong_status += 1;
                if wrong.len() < 20 {
                    wrong.push(Wrong {
                        id: id.clone(),
                        program: item.name.clone(),
                        expected: item.expect.join("|"),
                        got: if stdout_ok {
                            first.status.clone()
                        } else {
                            format!("{} with stdout {:?}", first.status, first.stdout)
                        },
                    });
                }
            }
            *per_second.entry(first.at.as_secs()).or_default() += 1;
            if sent.intended >= self.warmup {
                measured += 1;
                last = last.max(first.at);
                let latency = first.at.saturating_sub(sent.intended);
                let _ = hist.record((latency.as_micros() as u64).max(1));
            }
        }
        let span = last.saturating_sub(self.warmup).as_secs_f64();
        let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        let distribution = [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999]
            .iter()
            .map(|q| (q * 100.0, ms(*q)))
            .collect();
        let until = per_second.keys().last().copied().unwrap_or(0);
        Figures {
            sent: programs.values().map(|p| p.sent).sum(),
            results: programs
                .values()
                .map(|p| p.sent - p.statuses.get("lost").copied().unwrap_or(0))
                .sum(),
            lost,
            duplicated,
            wrong_status,
            unexpected_results: inner.strangers,
            throughput_per_s: if span > 0.0 {
                measured as f64 / span
            } else {
                0.0
            },
            latency_ms: Percentiles {
                p50: ms(0.5),
                p90: ms(0.9),
                p99: ms(0.99),
                p999: ms(0.999),
                max: hist.max() as f64 / 1000.0,
            },
            distribution,
            throughput_over_time: (0..=until)
                .map(|s| (s, per_second.get(&s).copied().unwrap_or(0)))
                .collect(),
            programs: programs.into_values().collect(),
            wrong,
        }
    }
}
