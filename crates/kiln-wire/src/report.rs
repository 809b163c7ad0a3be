//! What a runner says to the host, frame by frame: it is ready (or why its pod could not be
//! built), an interactive run's output as it comes, where the job's time went, and the outcome.

use serde::{Deserialize, Serialize};

use crate::job::Artifact;
use crate::outcome::Outcome;

/// What a runner says to the host.
#[derive(Debug, Serialize, Deserialize)]
pub enum RunnerReport {
    /// The pod is built and waits for its job.
    Ready,
    /// Building the pod failed at `step`.
    SetupFailed { step: String, error: String },
    /// The job ran (or could not); this is what happened.
    Finished(Box<Outcome>),
    /// As `Finished`, with what the compile step made (the job asked to keep it).
    Built(Box<Outcome>, Artifact),
    /// An interactive run's output as it was written (1 stdout, 2 stderr).
    Output { stream: u8, data: Vec<u8> },
    /// Where the job's time went in the pod; a runner sends it before the outcome.
    Timing(Timing),
}

/// Where a job's time went inside its pod, by the runner's clock: microseconds from the moment
/// it had read the job.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Timing {
    /// The files written and the first step's process at hand.
    pub prepared_us: u64,
    /// Each step that ran (compile, run): entered, its command exec'd, its program's exit seen,
    /// its process tree ended and its figures read.
    pub steps: Vec<[u64; 4]>,
    /// The outcome put together.
    pub done_us: u64,
}

/// A finished job as a runner hands it over: the outcome that is published, and beside it what
/// only the host's own parts use (the compile cache's artifact, a benchmark's timing), which
/// never reach a result.
#[derive(Clone, Debug)]
pub struct Finished {
    pub outcome: Outcome,
    pub artifact: Option<Artifact>,
    pub timing: Option<Timing>,
}

impl Finished {
    /// A finished job with nothing beside its outcome.
    pub fn of(outcome: Outcome) -> Finished {
        Finished {
            outcome,
            artifact: None,
            timing: None,
        }
    }

    /// The frames that carry it, in the order they are sent: its timing, then its outcome
    /// (`Built` when it carries an artifact).
    pub fn into_reports(self) -> Vec<RunnerReport> {
        let mut reports = Vec::with_capacity(2);
        if let Some(t) = self.timing {
            reports.push(RunnerReport::Timing(t));
        }
        reports.push(match self.artifact {
            Some(a) => RunnerReport::Built(Box::new(self.outcome), a),
            None => RunnerReport::Finished(Box::new(self.outcome)),
        });
        reports
    }
}

impl RunnerReport {
    /// The finished job this report ends, with `timing` as the runner sent it before; the
    /// report itself back for every other kind.
    pub fn into_finished(self, timing: Option<Timing>) -> Result<Finished, RunnerReport> {
        match self {
            RunnerReport::Finished(o) => Ok(Finished {
                outcome: *o,
                artifact: None,
                timing,
            }),
            RunnerReport::Built(o, a) => Ok(Finished {
                outcome: *o,
                artifact: Some(a),
                timing,
            }),
            other => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode, encode};
    use crate::outcome::Status;

    #[test]
    fn a_finished_job_travels_as_timing_then_its_outcome_and_comes_back_whole() {
        let finished = Finished {
            outcome: Outcome::failed(Status::Accepted, "fine"),
            artifact: Some(Artifact {
                files: Vec::new(),
                compile_output: "warning".into(),
            }),
            timing: Some(Timing {
                prepared_us: 7,
                steps: vec![[1, 2, 3, 4]],
                done_us: 9,
            }),
        };
        let frames: Vec<Vec<u8>> = finished
            .into_reports()
            .iter()
            .map(|r| encode(r).unwrap())
            .collect();
        assert_eq!(frames.len(), 2);
        let mut timing = None;
        let mut back = None;
        for f in &frames {
            match decode::<RunnerReport>(&f[4..]).unwrap() {
                RunnerReport::Timing(t) => timing = Some(t),
                r => back = Some(r.into_finished(timing.take()).unwrap()),
            }
        }
        let back = back.unwrap();
        assert_eq!(back.outcome.message.as_deref(), Some("fine"));
        assert_eq!(back.artifact.unwrap().compile_output.0, b"warning");
        assert_eq!(back.timing.unwrap().steps, vec![[1, 2, 3, 4]]);
    }

    #[test]
    fn reports_other_than_an_outcome_are_not_a_finished_job() {
        assert!(matches!(
            RunnerReport::Ready.into_finished(None),
            Err(RunnerReport::Ready)
        ));
    }
}
