//! A job's log: numbering lines, reading a process's output into lines,
//! and shipping them to the server in batches.
//!
//! Every line of a job (stdout, stderr and the agent's own `System` lines)
//! goes through one [`LogSink`], which gives it the next sequence number
//! (from 0, without gaps) and queues it. The queue is bounded: when the
//! server is slow or away, readers wait, and so does a job that writes more,
//! instead of lines being dropped. The uploader resends a failed batch with
//! the same sequence numbers; the server ignores lines it already has.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use podder_client::Client;
use podder_core::api::{LogLine, Stream};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{Mutex, mpsc};

use crate::retry::{CallError, Deadline, with_retry};

/// Lines longer than this are split into several.
pub const MAX_LINE: usize = 64 * 1024;
/// How many lines may wait for the uploader before writers wait.
const QUEUE: usize = 10_000;
/// A batch is sent when it has this many lines ...
const BATCH_LINES: usize = 1000;
/// ... or when its first line has waited this long.
const BATCH_DELAY: Duration = Duration::from_millis(50);

/// Numbers and queues a job's log lines. Cheap to clone.
#[derive(Clone)]
pub struct LogSink {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    next: u64,
    tx: Option<mpsc::Sender<LogLine>>,
}

impl LogSink {
    /// A sink whose first line gets seq `first`, and the receiving end.
    pub fn new(first: u64) -> (LogSink, mpsc::Receiver<LogLine>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (LogSink { inner: Arc::new(Mutex::new(Inner { next: first, tx: Some(tx) })) }, rx)
    }

    /// Appends a line. Waits while the queue is full; a line pushed after
    /// [`close`](Self::close), or once the receiver is gone, is discarded.
    pub async fn push(&self, stream: Stream, text: impl Into<String>) {
        let mut inner = self.inner.lock().await;
        let Some(tx) = inner.tx.clone() else { return };
        let line = LogLine { seq: inner.next, ts: now_ms(), stream, text: text.into() };
        // Sending under the lock keeps the queue in seq order.
        if tx.send(line).await.is_ok() {
            inner.next += 1;
        }
    }

    /// Appends a line written by the agent about the job.
    pub async fn system(&self, text: impl Into<String>) {
        self.push(Stream::System, text).await
    }

    /// Ends the log: the receiver sees the end once it has read what was
    /// queued, even if clones of the sink are still held somewhere.
    pub async fn close(&self) {
        self.inner.lock().await.tx = None;
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Reads `reader` to its end as lines of `stream` into `sink`. Lines over
/// [`MAX_LINE`] bytes are split (never inside a UTF-8 character); a last
/// line without a newline is kept; invalid UTF-8 is replaced.
pub(crate) async fn read_lines(reader: impl AsyncRead + Unpin, stream: Stream, sink: LogSink) {
    let mut reader = BufReader::with_capacity(MAX_LINE, reader);
    let mut line: Vec<u8> = Vec::new();
    loop {
        let buf = match reader.fill_buf().await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => &[][..],
        };
        if buf.is_empty() {
            if !line.is_empty() {
                sink.push(stream, lossy(&line)).await;
            }
            return;
        }
        if line.len() >= MAX_LINE {
            // A full line: a newline next ends it, anything else goes on in
            // a new line.
            if buf[0] == b'\n' {
                reader.consume(1);
                emit(&mut line, stream, &sink).await;
            } else {
                let rest = line.split_off(split_point(&line));
                sink.push(stream, lossy(&line)).await;
                line = rest;
            }
            continue;
        }
        let take = buf.len().min(MAX_LINE - line.len());
        match buf[..take].iter().position(|&b| b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&buf[..i]);
                reader.consume(i + 1);
                emit(&mut line, stream, &sink).await;
            }
            None => {
                line.extend_from_slice(&buf[..take]);
                reader.consume(take);
            }
        }
    }
}

/// Sends a line that ended with a newline (without a trailing `\r`).
async fn emit(line: &mut Vec<u8>, stream: Stream, sink: &LogSink) {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    sink.push(stream, lossy(line)).await;
    line.clear();
}

/// Where to cut a full line so that a UTF-8 character cut in two at its end
/// moves to the next line.
fn split_point(line: &[u8]) -> usize {
    match std::str::from_utf8(line) {
        Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => e.valid_up_to(),
        _ => line.len(),
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// How the uploader ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum UploadEnd {
    /// Every line was delivered.
    Done,
    /// The lease is gone (or the server refuses the lines): the rest was dropped.
    Stopped,
}

/// Ships lines from `rx` to the server until the sink is closed. With
/// `keep_last`, the lines still unsent when the sink closes are not sent but
/// handed back, for the job's finish to carry (see `FinishWithLogs`); else
/// what is handed back is empty.
pub(crate) async fn upload(
    client: Client,
    lease: String,
    mut rx: mpsc::Receiver<LogLine>,
    deadline: Deadline,
    keep_last: bool,
) -> (UploadEnd, Vec<LogLine>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let until = tokio::time::Instant::now() + BATCH_DELAY;
        let mut closed = false;
        while batch.len() < BATCH_LINES {
            tokio::select! {
                l = rx.recv() => match l {
                    Some(l) => batch.push(l),
                    None => {
                        closed = true;
                        break;
                    }
                },
                _ = tokio::time::sleep_until(until) => break,
            }
        }
        if closed && keep_last {
            return (UploadEnd::Done, batch);
        }
        let res = with_retry("uploading logs", &deadline, || client.upload_logs(&lease, batch.clone())).await;
        match res {
            Ok(()) => {}
            Err(CallError::Gone) => return (UploadEnd::Stopped, Vec::new()),
            Err(e) => {
                tracing::error!(lease = %lease, "giving up on the job's log: {e}");
                return (UploadEnd::Stopped, Vec::new());
            }
        }
    }
    (UploadEnd::Done, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: &[u8]) -> Vec<String> {
        let (sink, mut rx) = LogSink::new(0);
        read_lines(input, Stream::Stdout, sink.clone()).await;
        sink.close().await;
        let mut out = Vec::new();
        let mut seq = 0;
        while let Some(l) = rx.recv().await {
            assert_eq!(l.seq, seq);
            seq += 1;
            out.push(l.text);
        }
        out
    }

    #[tokio::test]
    async fn splits_lines() {
        assert_eq!(lines_of(b"a\r\nb\n\nlast").await, ["a", "b", "", "last"]);
        assert!(lines_of(b"").await.is_empty());
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        let got = lines_of(&long).await;
        assert_eq!(got.iter().map(|l| l.len()).collect::<Vec<_>>(), [MAX_LINE, MAX_LINE, 5]);
        // A line of exactly the limit stays one line.
        let mut exact = vec![b'z'; MAX_LINE];
        exact.extend_from_slice(b"\nnext\n");
        let got = lines_of(&exact).await;
        assert_eq!(got.iter().map(|l| l.len()).collect::<Vec<_>>(), [MAX_LINE, 4]);
        // A 3-byte character straddling the limit stays whole.
        let mut s = vec![b'y'; MAX_LINE - 1];
        s.extend_from_slice("€\n".as_bytes());
        let got = lines_of(&s).await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), MAX_LINE - 1);
        assert_eq!(got[1], "€");
    }
}
