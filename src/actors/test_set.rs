//! A test-case set in flight, as the Dispatcher keeps it: its first test compiles (and runs),
//! then every other test runs in a pod of its own with that build laid in, in parallel; when the
//! tests it waits for are back, one result holds them all. The Dispatcher decides which runner
//! gets which test; what a test's return does to the set, and the set's one result, are here.

use std::collections::VecDeque;

use crate::bytes::Bytes;
use crate::job::{Artifact, Job};
use crate::outcome::{Outcome, Status, TestOutcome};
use crate::pods::Finished;
use crate::queue::Delivery;

pub(super) struct TestSet {
    pub(super) delivery: Delivery,
    pub(super) language: String,
    pub(super) pool: usize,
    pub(super) jobs: Vec<Job>,
    /// Tests not yet given to a runner, in test order.
    pub(super) pending: VecDeque<usize>,
    results: Vec<Option<Outcome>>,
    pub(super) attempts: Vec<u32>,
    pub(super) running: usize,
    /// The first test has come back (it compiled the program).
    pub(super) compiled: bool,
    pub(super) built: Option<Artifact>,
    compile_output: Bytes,
    stop_on_first_failure: bool,
    /// The first test, in test order, known not to be accepted.
    failed: Option<usize>,
}

impl TestSet {
    pub(super) fn new(delivery: Delivery, language: String, pool: usize, jobs: Vec<Job>) -> Self {
        let n = jobs.len();
        // An interpreted language has nothing to build: every test may start at once. A
        // compiled one's first test brings its build back for the others.
        let mut jobs = jobs;
        let compiled = jobs[0].compile.is_none();
        jobs[0].keep_artifact = !compiled;
        TestSet {
            stop_on_first_failure: delivery.envelope.submission.stop_on_first_failure,
            delivery,
            language,
            pool,
            jobs,
            pending: (0..n).collect(),
            results: vec![None; n],
            attempts: vec![1; n],
            running: 0,
            compiled,
            built: None,
            compile_output: Default::default(),
            failed: None,
        }
    }

    /// The tests whose results the set waits for: all, or up to the first failure.
    pub(super) fn needed(&self) -> usize {
        match (self.stop_on_first_failure, self.failed) {
            (true, Some(f)) => f + 1,
            _ => self.jobs.len(),
        }
    }

    pub(super) fn complete(&self) -> bool {
        self.running == 0 && self.results[..self.needed()].iter().all(Option::is_some)
    }

    /// Test `index` came back (or was lost: `Err`, run again up to `max_attempts`).
    pub(super) fn record(
        &mut self,
        index: usize,
        result: Result<Finished, impl std::fmt::Display>,
        max_attempts: u32,
    ) {
        self.running -= 1;
        match result {
            Ok(Finished {
                outcome, artifact, ..
            }) => {
                if index == 0 && !self.compiled {
                    self.compiled = true;
                    self.built = artifact;
                    self.compile_output = outcome.compile_output.clone();
                    if outcome.status == Status::CompileError {
                        // Nothing to run the other tests with: the compile error is the result.
                        self.pending.clear();
                        self.failed = Some(0);
                        self.stop_on_first_failure = true;
                    }
                }
                if outcome.status != Status::Accepted {
                    self.failed = Some(self.failed.map_or(index, |f| f.min(index)));
                }
                self.results[index] = Some(outcome);
            }
            Err(reason) => {
                self.attempts[index] += 1;
                if self.attempts[index] > max_attempts {
                    let message = format!(
                        "gave up after {max_attempts} attempts; the last one failed because {reason}"
                    );
                    self.results[index] = Some(Outcome::failed(Status::InternalError, message));
                    self.failed = Some(self.failed.map_or(index, |f| f.min(index)));
                } else {
                    self.pending.push_front(index);
                }
            }
        }
    }

    /// The set's delivery, language and one outcome, once it is complete.
    pub(super) fn into_result(self, max_tests_output_bytes: usize) -> (Delivery, String, Outcome) {
        let (n, needed) = (self.jobs.len(), self.needed());
        let runs: Vec<Outcome> = self
            .results
            .into_iter()
            .take(needed)
            .map(|r| r.expect("complete"))
            .collect();
        let outcome = one_outcome(runs, n, self.compile_output, max_tests_output_bytes);
        (self.delivery, self.language, outcome)
    }
}

/// One result for a set of `n` tests from the `runs` it waited for: the first test that is not
/// accepted (in test order) gives the status and the top-level output, every run is in
/// `tests`, and their output together stays within `max_tests_output_bytes`. A compile error
/// is the result as it came.
fn one_outcome(
    runs: Vec<Outcome>,
    n: usize,
    compile_output: Bytes,
    max_tests_output_bytes: usize,
) -> Outcome {
    if runs.len() == 1 && runs[0].status == Status::CompileError {
        return runs.into_iter().next().expect("one");
    }
    let first_bad = runs.iter().position(|o| o.status != Status::Accepted);
    let head = &runs[first_bad.unwrap_or(0)];
    let mut tests: Vec<TestOutcome> = runs.iter().map(TestOutcome::of).collect();
    // The result stays bounded: past the budget, later tests' output is cut and says so.
    let mut budget = max_tests_output_bytes;
    for t in &mut tests {
        let size = t.stdout.len() + t.stderr.len();
        if size > budget {
            let keep_out = t.stdout.len().min(budget);
            t.stdout.0.truncate(keep_out);
            t.stderr.0.truncate(budget - keep_out);
            let note = format!(
                "output cut: a result holds at most {max_tests_output_bytes} bytes of test output (max_tests_output_bytes)"
            );
            t.message = Some(match t.message.take() {
                Some(m) => format!("{m}; {note}"),
                None => note,
            });
        }
        budget -= t.stdout.len() + t.stderr.len();
    }
    let message = match first_bad {
        Some(i) => format!(
            "test {} of {n}{}: {}",
            i + 1,
            if runs.len() < n {
                " (stopped there)"
            } else {
                ""
            },
            head.message
                .clone()
                .unwrap_or_else(|| head.status.to_string())
        ),
        None => format!("all {n} tests accepted"),
    };
    Outcome {
        status: head.status,
        exit_code: head.exit_code,
        signal: head.signal,
        stdout: tests[first_bad.unwrap_or(0)].stdout.clone(),
        stderr: tests[first_bad.unwrap_or(0)].stderr.clone(),
        compile_output,
        cpu_time_ms: runs.iter().map(|o| o.cpu_time_ms).max().unwrap_or(0),
        wall_time_ms: runs.iter().map(|o| o.wall_time_ms).max().unwrap_or(0),
        memory_bytes: runs.iter().map(|o| o.memory_bytes).max().unwrap_or(0),
        message: Some(message),
        forked: false,
        tests,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: Status, stdout: &str, wall_time_ms: u64) -> Outcome {
        Outcome {
            status,
            stdout: Bytes(stdout.as_bytes().to_vec()),
            wall_time_ms,
            message: None,
            ..Outcome::failed(status, "")
        }
    }

    #[test]
    fn the_first_failing_test_gives_the_status_and_the_output() {
        let runs = vec![
            run(Status::Accepted, "1\n", 10),
            run(Status::WrongAnswer, "3\n", 30),
            run(Status::TimeLimitExceeded, "", 20),
        ];
        let o = one_outcome(runs, 3, Bytes(b"warning".to_vec()), 1 << 20);
        assert_eq!(o.status, Status::WrongAnswer);
        assert_eq!(o.stdout.0, b"3\n");
        assert_eq!(o.compile_output.0, b"warning");
        assert_eq!(o.wall_time_ms, 30, "the slowest test's time");
        assert_eq!(o.tests.len(), 3);
        assert_eq!(o.message.as_deref(), Some("test 2 of 3: wrong_answer"));
    }

    #[test]
    fn a_set_stopped_early_says_so_and_an_accepted_one_says_all() {
        let stopped = one_outcome(
            vec![
                run(Status::Accepted, "a", 1),
                run(Status::RuntimeError, "b", 1),
            ],
            5,
            Bytes::default(),
            1 << 20,
        );
        assert!(stopped
            .message
            .unwrap()
            .starts_with("test 2 of 5 (stopped there): "));
        let all = one_outcome(
            vec![run(Status::Accepted, "a", 1), run(Status::Accepted, "b", 1)],
            2,
            Bytes::default(),
            1 << 20,
        );
        assert_eq!(all.status, Status::Accepted);
        assert_eq!(all.message.as_deref(), Some("all 2 tests accepted"));
        assert_eq!(all.stdout.0, b"a", "the first test's output");
    }

    #[test]
    fn test_output_past_the_budget_is_cut_and_says_so() {
        let runs = vec![
            run(Status::Accepted, "123456", 1),
            run(Status::Accepted, "abcdef", 1),
            run(Status::Accepted, "xyz", 1),
        ];
        let o = one_outcome(runs, 3, Bytes::default(), 8);
        let outs: Vec<&[u8]> = o.tests.iter().map(|t| t.stdout.0.as_slice()).collect();
        assert_eq!(outs, [&b"123456"[..], b"ab", b""]);
        assert_eq!(o.tests[0].message, None, "within the budget");
        assert!(o.tests[1]
            .message
            .as_deref()
            .unwrap()
            .contains("at most 8 bytes"));
        assert!(o.tests[2]
            .message
            .as_deref()
            .unwrap()
            .contains("output cut"));
    }

    #[test]
    fn a_compile_error_is_the_result_as_it_came() {
        let error = Outcome {
            compile_output: Bytes(b"main.c:1: error".to_vec()),
            ..Outcome::failed(Status::CompileError, "compilation failed")
        };
        let o = one_outcome(vec![error], 4, Bytes::default(), 1 << 20);
        assert_eq!(o.status, Status::CompileError);
        assert_eq!(o.compile_output.0, b"main.c:1: error");
        assert!(o.tests.is_empty());
        assert_eq!(o.message.as_deref(), Some("compilation failed"));
    }
}
