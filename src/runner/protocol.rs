//! Frames between the host and a runner: a little-endian u32 length, then a bincode payload.
//! Host to runner: `PodSetup`, then one `Job`. Runner to host: `Ready` or `SetupFailed`, then
//! (from a local pod) the job's `Timing` and one `Outcome`.

use std::io::{self, Read, Write};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::outcome::Outcome;

/// Jobs bigger than this are refused before they are read (the API's own cap is lower).
pub const MAX_FRAME: usize = 512 << 20;

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
    Built(Box<Outcome>, crate::job::Artifact),
    /// An interactive run's output as it was written (1 stdout, 2 stderr).
    Output { stream: u8, data: Vec<u8> },
    /// Where the job's time went in the pod; a local pod's runner sends it before the outcome.
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

impl RunnerReport {
    /// The report for a finished job: `Built` when it carries an artifact.
    pub fn finished(mut outcome: Outcome) -> RunnerReport {
        match outcome.artifact.take() {
            Some(a) => RunnerReport::Built(Box::new(outcome), a),
            None => RunnerReport::Finished(Box::new(outcome)),
        }
    }

    /// The outcome of a finished job, its artifact back in it; None for the other reports.
    pub fn into_outcome(self) -> Result<Outcome, RunnerReport> {
        match self {
            RunnerReport::Finished(o) => Ok(*o),
            RunnerReport::Built(o, a) => {
                let mut o = *o;
                o.artifact = Some(a);
                Ok(o)
            }
            other => Err(other),
        }
    }
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    let payload = bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| e.to_string())?;
    let mut frame = Vec::with_capacity(payload.len() + 4);
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
    let (value, used) = bincode::serde::decode_from_slice(payload, bincode::config::standard())
        .map_err(|e| e.to_string())?;
    if used != payload.len() {
        return Err(format!(
            "{} trailing bytes after the message",
            payload.len() - used
        ));
    }
    Ok(value)
}

/// Reads one frame; `Ok(None)` on a clean end of input before the frame starts.
pub fn read_frame<T: DeserializeOwned>(r: &mut impl Read) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is over the {MAX_FRAME} limit"),
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    decode(&payload)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

pub fn write_frame<T: Serialize>(w: &mut impl Write, value: &T) -> io::Result<()> {
    let frame = encode(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    w.write_all(&frame)?;
    w.flush()
}
