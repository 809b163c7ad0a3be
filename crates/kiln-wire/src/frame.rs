//! The one frame format between the host and a runner, read and written here for every side: a
//! little-endian u32 length, then a bincode payload. Host to runner: `PodSetup`, then one `Job`
//! (then, for an interactive run, `session::Input`s). Runner to host: `Ready` or `SetupFailed`,
//! then the job's `Timing` and one outcome (`report::RunnerReport`).
//!
//! Blocking readers use `read_frame`; a reader that gets bytes as they come (a non-blocking
//! descriptor) feeds them to a `FrameBuffer`; a tokio reader uses `read_frame_async` (feature
//! `tokio`).

use std::io::{self, Read, Write};

use serde::{de::DeserializeOwned, Serialize};

/// Frames bigger than this are refused before they are read (the API's own cap is lower).
pub const MAX_FRAME: usize = 512 << 20;

/// Why bytes are not a frame of the expected kind.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is over the {MAX_FRAME} limit")]
    TooBig(usize),
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    #[error("{0}")]
    Encode(String),
    #[error("{0}")]
    Decode(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl FrameError {
    /// The peer closed the stream (at or inside a frame).
    pub fn is_closed(&self) -> bool {
        matches!(self, FrameError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof)
    }
}

impl From<FrameError> for io::Error {
    fn from(e: FrameError) -> io::Error {
        match e {
            FrameError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        }
    }
}

/// `value` as one frame: its length, then its payload.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, FrameError> {
    let payload = bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    if payload.len() > MAX_FRAME {
        return Err(FrameError::TooBig(payload.len()));
    }
    let mut frame = Vec::with_capacity(payload.len() + 4);
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// A frame's payload as a value; every byte of it must belong to the value.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (value, used) = bincode::serde::decode_from_slice(payload, bincode::config::standard())
        .map_err(|e| FrameError::Decode(e.to_string()))?;
    if used != payload.len() {
        return Err(FrameError::Trailing(payload.len() - used));
    }
    Ok(value)
}

fn length(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooBig(len));
    }
    Ok(len)
}

/// Reads one frame; `Ok(None)` on a clean end of input before the frame starts.
pub fn read_frame<T: DeserializeOwned>(r: &mut impl Read) -> io::Result<Option<T>> {
    let mut prefix = [0u8; 4];
    match r.read_exact(&mut prefix) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut payload = vec![0u8; length(prefix)?];
    r.read_exact(&mut payload)?;
    Ok(Some(decode(&payload)?))
}

/// Writes one frame and flushes it.
pub fn write_frame<T: Serialize>(w: &mut impl Write, value: &T) -> io::Result<()> {
    let frame = encode(value)?;
    w.write_all(&frame)?;
    w.flush()
}

/// Reads one frame from an async stream; a stream that ends, even before the frame starts, is
/// `FrameError::Io` with `UnexpectedEof` (`is_closed`).
#[cfg(feature = "tokio")]
pub async fn read_frame_async<T, R>(r: &mut R) -> Result<T, FrameError>
where
    T: DeserializeOwned,
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix).await?;
    let mut payload = vec![0u8; length(prefix)?];
    r.read_exact(&mut payload).await?;
    decode(&payload)
}

/// Frames out of bytes that arrive in pieces: `push` what was read, then take the whole frames.
#[derive(Default)]
pub struct FrameBuffer {
    pending: Vec<u8>,
}

impl FrameBuffer {
    pub fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// The next whole frame's value, `None` while it is incomplete. A frame that does not
    /// decode is consumed and returned as the error, so the frames after it are still read.
    pub fn next<T: DeserializeOwned>(&mut self) -> Option<Result<T, FrameError>> {
        if self.pending.len() < 4 {
            return None;
        }
        let prefix = self.pending[..4].try_into().expect("4 bytes");
        let len = match length(prefix) {
            Ok(len) => len,
            Err(e) => {
                self.pending.clear();
                return Some(Err(e));
            }
        };
        if self.pending.len() < 4 + len {
            return None;
        }
        let value = decode(&self.pending[4..4 + len]);
        self.pending.drain(..4 + len);
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_reads_back_as_written_and_a_clean_end_is_none() {
        let mut bytes = Vec::new();
        write_frame(&mut bytes, &("job", 7u32)).unwrap();
        let mut r = &bytes[..];
        assert_eq!(
            read_frame::<(String, u32)>(&mut r).unwrap(),
            Some(("job".to_string(), 7))
        );
        assert_eq!(read_frame::<(String, u32)>(&mut r).unwrap(), None);
    }

    #[test]
    fn an_oversized_length_is_refused_before_anything_is_read() {
        let mut bytes = ((MAX_FRAME + 1) as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"abc");
        let e = read_frame::<String>(&mut &bytes[..]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("over the"), "{e}");
    }

    #[test]
    fn trailing_bytes_make_a_payload_invalid() {
        let mut payload = encode(&5u8).unwrap()[4..].to_vec();
        payload.push(0);
        assert!(matches!(
            decode::<u8>(&payload),
            Err(FrameError::Trailing(1))
        ));
    }

    #[test]
    fn a_buffer_yields_frames_only_when_whole_and_skips_a_bad_one() {
        let mut bytes = encode(&"one".to_string()).unwrap();
        let bad = [2u8, 0, 0, 0, 0xff, 0xff];
        bytes.extend_from_slice(&bad);
        bytes.extend(encode(&"two".to_string()).unwrap());
        let mut buf = FrameBuffer::default();
        buf.push(&bytes[..3]);
        assert!(buf.next::<String>().is_none());
        buf.push(&bytes[3..]);
        assert_eq!(buf.next::<String>().unwrap().unwrap(), "one");
        assert!(buf.next::<String>().unwrap().is_err());
        assert_eq!(buf.next::<String>().unwrap().unwrap(), "two");
        assert!(buf.next::<String>().is_none());
    }
}
