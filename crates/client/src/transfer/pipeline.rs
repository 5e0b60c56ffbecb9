//! Uploading a directory while it is being scanned.
//!
//! The scan (on blocking threads) reports each file's chunks as they are
//! cut; an asker task gathers them into large `missing` requests; what the
//! server lacks goes to the reader thread and the senders of
//! [`super::send_batches`]. So hashing, asking, reading and sending overlap.
//!
//! Chunks of files found in the stat cache were most likely uploaded by an
//! earlier run, so they are asked about only after the scan, in large
//! batches; and when every file came from the cache (an unchanged tree),
//! not at all: the manifest is committed at once, and only if the server
//! refuses it for missing chunks (an earlier run was interrupted) are they
//! asked about and sent.
//!
//! Nothing is committed until the scan has ended without a problem and every
//! chunk is on the server; a scan that fails stops the upload, and an upload
//! that fails stops the scan.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use podder_core::ChunkId;
use podder_store::ingest::{Ingest, Ingested};
use podder_store::scan::{ChunkRef, ChunkSource, ScanObserver, ScanOptions, ScannedTree, scan_tree_with};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Batch, Outgoing, Progress, SEND_BATCH_BYTES, UploadReport, send_batches, upload_tree};
use crate::local::LocalIngest;
use crate::{Client, ClientError, Result};

/// Where a file's chunks reported by the scan come from.
#[derive(Clone, Copy, Debug)]
enum Origin {
    /// Cut and hashed here: to be asked about and sent.
    Hashed,
    /// From the stat cache: asked about after the scan (see the module docs).
    Cached,
    /// Handed to the server on this machine, which stored them: `new` of
    /// them (`new_bytes`) were new to it; `shown` bytes of the file are on
    /// the progress bar already (see [`Feed::ingesting`]).
    Stored { new: u64, new_bytes: u64, shown: u64 },
}

/// Scanning threads at least, when large files go to a server on this
/// machine by descriptor.
const INGEST_THREADS: usize = 4;
/// Ask as soon as this many new chunk ids are waiting...
const ASK_IDS: usize = 8192;
/// ...or this many bytes of new chunks (one request body's worth)...
const ASK_BYTES: u64 = SEND_BATCH_BYTES as u64;
/// ...or the oldest waiting id has waited this long.
const ASK_AFTER: Duration = Duration::from_millis(20);
/// Chunks of cached files are asked about after the scan, this many at once.
const ASK_BATCH_DEFERRED: usize = 20_000;
/// The scan keeps the bytes of the chunks it cuts until they are sent (or
/// the server says it has them), so they need not be read and hashed a
/// second time, up to this much; beyond it, chunks are read back from their
/// files when their turn comes.
const HELD_BYTES: u64 = 8 * SEND_BATCH_BYTES as u64;
/// While the upload keeps pace, the scan waits for room in the budget
/// rather than dropping bytes it would have to read again (a second read
/// and fresh buffers cost a large local upload a sixth of its client CPU):
/// up to this long at a time...
const WAIT_AT_MOST: Duration = Duration::from_millis(100);
/// ...and this long in all. Past it the upload is the slower side (a slow
/// network): the scan runs ahead, so that it ends (and writes the stat
/// cache, which a resumed upload relies on) as soon as it can.
const WAIT_IN_ALL: Duration = Duration::from_secs(1);

/// Bytes of chunk data held between the scan and the senders.
struct Budget {
    held: AtomicU64,
    /// Woken when bytes are let go.
    freed: std::sync::Condvar,
    lock: std::sync::Mutex<()>,
    /// How long the scan has waited so far, in microseconds.
    waited_us: AtomicU64,
}

impl Budget {
    fn new() -> Budget {
        Budget {
            held: AtomicU64::new(0),
            freed: std::sync::Condvar::new(),
            lock: std::sync::Mutex::new(()),
            waited_us: AtomicU64::new(0),
        }
    }

    /// Counts `n` more bytes as held, if they fit.
    fn take(self: &Arc<Self>, n: u64) -> Option<Arc<Self>> {
        // Anything fits into an empty budget, so a report larger than the
        // budget is held too rather than waited for in vain.
        let fits = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| (h == 0 || h + n <= HELD_BYTES).then_some(h + n));
        fits.is_ok().then(|| self.clone())
    }

    /// [`take`](Self::take), waiting for room while the upload keeps pace
    /// (see [`WAIT_AT_MOST`]); `stop` ends the wait.
    fn take_waiting(self: &Arc<Self>, n: u64, stop: &AtomicBool) -> Option<Arc<Self>> {
        if let Some(b) = self.take(n) {
            return Some(b);
        }
        let start = std::time::Instant::now();
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let taken = loop {
            if let Some(b) = self.take(n) {
                break Some(b);
            }
            let so_far = Duration::from_micros(self.waited_us.load(Ordering::Relaxed)) + start.elapsed();
            if stop.load(Ordering::Relaxed) || start.elapsed() >= WAIT_AT_MOST || so_far >= WAIT_IN_ALL {
                break None;
            }
            let slice = Duration::from_millis(10);
            guard = self.freed.wait_timeout(guard, slice).unwrap_or_else(|e| e.into_inner()).0;
        };
        drop(guard);
        self.waited_us.fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
        taken
    }

    fn release(&self, n: u64) {
        self.held.fetch_sub(n, Ordering::AcqRel);
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.freed.notify_all();
    }
}

/// A chunk's bytes, counted against the [`Budget`] until dropped.
pub(super) struct Held {
    data: Bytes,
    budget: Arc<Budget>,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Held {
    pub(super) fn len(&self) -> usize {
        self.data.len()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.release(self.data.len() as u64);
    }
}

/// Feeds the scan's chunks to the asker, and its counts to the progress bar.
struct Feed {
    tx: mpsc::UnboundedSender<(Batch, Origin)>,
    ingest: Option<LocalIngest>,
    stop: Arc<AtomicBool>,
    budget: Arc<Budget>,
    progress: Arc<dyn Progress>,
    files_total: AtomicU64,
    files_done: AtomicU64,
    /// Bytes of files being stored by the server that the progress bar
    /// shows already, by file.
    shown: std::sync::Mutex<std::collections::HashMap<PathBuf, u64>>,
}

impl ScanObserver for Feed {
    fn walked(&self, files: usize, bytes: u64) {
        self.files_total.store(files as u64, Ordering::Relaxed);
        self.progress.start(bytes);
        self.progress.files(0, files as u64);
    }

    fn chunks(&self, path: &Path, chunks: &[ChunkRef], data: &[Bytes], cached: bool) {
        let n: u64 = data.iter().map(|d| d.len() as u64).sum();
        let budget = if n > 0 { self.budget.take_waiting(n, &self.stop) } else { None };
        let mut data = data.iter();
        let batch: Batch = chunks
            .iter()
            .map(|r| Outgoing {
                id: r.id,
                src: ChunkSource { path: path.to_path_buf(), offset: r.offset, len: r.len },
                data: data.next().zip(budget.as_ref()).map(|(d, b)| Held { data: d.clone(), budget: b.clone() }),
            })
            .collect();
        let origin = if cached { Origin::Cached } else { Origin::Hashed };
        if self.tx.send((batch, origin)).is_err() {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    fn ingesting(&self, path: &Path, done: u64) {
        let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
        let before = shown.insert(path.to_path_buf(), done).unwrap_or(0);
        self.progress.advance(done.saturating_sub(before));
    }

    fn ingest(&self) -> Option<&dyn Ingest> {
        self.ingest.as_ref().map(|i| i as &dyn Ingest)
    }

    fn ingested(&self, path: &Path, got: &Ingested) {
        let batch: Batch = got
            .chunks
            .iter()
            .map(|r| Outgoing {
                id: r.id,
                src: ChunkSource { path: path.to_path_buf(), offset: r.offset, len: r.len },
                data: None,
            })
            .collect();
        let shown = self.shown.lock().unwrap_or_else(|e| e.into_inner()).remove(path).unwrap_or(0);
        let origin = Origin::Stored { new: got.new_chunks, new_bytes: got.new_bytes, shown };
        if self.tx.send((batch, origin)).is_err() {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    fn file_done(&self, _size: u64, _cached: bool) {
        let done = self.files_done.fetch_add(1, Ordering::Relaxed) + 1;
        self.progress.files(done, self.files_total.load(Ordering::Relaxed));
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Scans `root` and uploads what the server lacks as the scan goes, then
/// commits the manifest. `stat_cache` is the stat cache file for `root`, if
/// one is kept. Returns the scanned tree (with its scan statistics) and what
/// was sent.
pub async fn upload_dir(
    client: &Client,
    root: &Path,
    opts: &ScanOptions,
    stat_cache: Option<PathBuf>,
    progress: Arc<dyn Progress>,
) -> Result<(ScannedTree, UploadReport)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let stop = Arc::new(AtomicBool::new(false));
    let feed = Feed {
        tx,
        ingest: LocalIngest::discover(client).await,
        stop: stop.clone(),
        budget: Arc::new(Budget::new()),
        progress: progress.clone(),
        files_total: AtomicU64::new(0),
        files_done: AtomicU64::new(0),
        shown: Default::default(),
    };
    let (root_owned, mut opts) = (root.to_path_buf(), opts.clone());
    if feed.ingest.is_some() && opts.threads == 0 {
        // Threads that hand files over mostly wait for the server: a few
        // more files in flight keep its cores busy while one waits on a write.
        opts.threads = std::thread::available_parallelism().map_or(1, |n| n.get()).max(INGEST_THREADS);
    }
    // The feed (and with it the channel) is dropped when the scan returns.
    let mut scan =
        tokio::task::spawn_blocking(move || scan_tree_with(&root_owned, &opts, stat_cache.as_deref(), &feed));
    let upload = send_all(client, rx, &*progress);
    tokio::pin!(upload);

    let (scanned, early) = tokio::select! {
        scanned = &mut scan => (scanned, None),
        sent = &mut upload => match sent {
            // The scan still runs (it holds the channel open), so this is a
            // failed upload: stop the scan, and report why.
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                let _ = scan.await;
                return Err(e);
            }
            // Both ended at once.
            Ok(sent) => (scan.await, Some(sent)),
        },
    };
    let tree = match scanned {
        Ok(Ok(tree)) => tree,
        // Dropping `upload` cancels it: nothing of a failed scan is committed.
        Ok(Err(e)) => return Err(e.into()),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => return Err(ClientError::Protocol(format!("the scan was cancelled: {e}"))),
    };
    let sent = match early {
        Some(sent) => sent,
        None => upload.await?,
    };
    let mut report = UploadReport {
        manifest: None,
        files: tree.manifest.file_count(),
        bytes_total: tree.manifest.total_size(),
        chunks_total: sent.distinct,
        chunks_sent: sent.chunks,
        bytes_sent: sent.bytes,
        local_files: sent.local_files,
        local_bytes: sent.local_bytes,
    };
    match client.commit_manifest(&tree.manifest).await {
        Ok(c) => {
            progress.advance(sent.unasked_bytes);
            report.manifest = Some(c.id);
        }
        // Chunks are missing: those not asked about (an unchanged tree whose
        // earlier upload was interrupted), or one the server said it had is
        // gone (a garbage collection ran meanwhile). Ask about everything,
        // and send what the server lacks.
        Err(e) if e.status() == Some(400) => {
            let again = upload_tree(client, &tree, &*progress).await?;
            report.chunks_sent += again.chunks_sent;
            report.bytes_sent += again.bytes_sent;
            report.manifest = again.manifest;
        }
        Err(e) => return Err(e),
    }
    progress.finish();
    Ok((tree, report))
}

/// What [`send_all`] did.
struct Sent {
    /// Distinct chunks in the tree.
    distinct: usize,
    chunks: usize,
    bytes: u64,
    /// Bytes of the chunks never asked about (every file came from the stat
    /// cache): they count as done once the manifest commits.
    unasked_bytes: u64,
    /// Files the server on this machine stored by descriptor, and their bytes.
    local_files: usize,
    local_bytes: u64,
}

/// The asker: gathers new chunk ids from the scan, asks the server which it
/// lacks in large batches, and hands those to the senders. Chunks of cached
/// files wait for the end of the scan (see the module docs).
async fn send_all(
    client: &Client,
    mut chunks: mpsc::UnboundedReceiver<(Batch, Origin)>,
    progress: &dyn Progress,
) -> Result<Sent> {
    let (tx, rx) = mpsc::channel::<Batch>(2);
    let asking = async move {
        let mut seen: HashSet<ChunkId> = HashSet::new();
        let mut pending: Batch = Vec::new();
        let mut pending_bytes = 0u64;
        let mut deferred: Batch = Vec::new();
        let mut hashed_any = false;
        let (mut stored_chunks, mut stored_bytes) = (0usize, 0u64);
        let (mut local_files, mut local_bytes) = (0usize, 0u64);
        let mut deadline = Instant::now();
        loop {
            let next = if pending.is_empty() {
                chunks.recv().await
            } else {
                match tokio::time::timeout_at(deadline, chunks.recv()).await {
                    Ok(next) => next,
                    Err(_) => {
                        ask(client, std::mem::take(&mut pending), &tx, progress).await?;
                        pending_bytes = 0;
                        continue;
                    }
                }
            };
            let Some((batch, origin)) = next else { break };
            let cached = matches!(origin, Origin::Cached);
            hashed_any |= !cached;
            if let Origin::Stored { new, new_bytes, shown } = origin {
                // On the server already: nothing to ask or send.
                (stored_chunks, stored_bytes) = (stored_chunks + new as usize, stored_bytes + new_bytes);
                let size: u64 = batch.iter().map(|c| u64::from(c.src.len)).sum();
                (local_files, local_bytes) = (local_files + 1, local_bytes + size);
                progress.advance(size.saturating_sub(shown));
                seen.extend(batch.iter().map(|c| c.id));
                continue;
            }
            for chunk in batch {
                if !seen.insert(chunk.id) {
                    // Another file already brought this chunk.
                    progress.advance(u64::from(chunk.src.len));
                } else if cached {
                    deferred.push(chunk);
                } else {
                    if pending.is_empty() {
                        deadline = Instant::now() + ASK_AFTER;
                    }
                    pending_bytes += u64::from(chunk.src.len);
                    pending.push(chunk);
                }
            }
            if pending.len() >= ASK_IDS || pending_bytes >= ASK_BYTES {
                ask(client, std::mem::take(&mut pending), &tx, progress).await?;
                pending_bytes = 0;
            }
        }
        if !pending.is_empty() {
            ask(client, pending, &tx, progress).await?;
        }
        let mut unasked_bytes = 0;
        if hashed_any {
            while !deferred.is_empty() {
                let rest = deferred.split_off(deferred.len().min(ASK_BATCH_DEFERRED));
                ask(client, std::mem::replace(&mut deferred, rest), &tx, progress).await?;
            }
        } else {
            unasked_bytes = deferred.iter().map(|c| u64::from(c.src.len)).sum();
        }
        Ok::<_, ClientError>((seen.len(), unasked_bytes, (stored_chunks, stored_bytes), (local_files, local_bytes)))
    };
    let ((distinct, unasked_bytes, stored, local), (chunks, bytes)) =
        tokio::try_join!(asking, send_batches(client, rx, progress))?;
    Ok(Sent {
        distinct,
        chunks: chunks + stored.0,
        bytes: bytes + stored.1,
        unasked_bytes,
        local_files: local.0,
        local_bytes: local.1,
    })
}

/// One `missing` request; what the server has counts as done at once, what
/// it lacks goes to the senders.
async fn ask(client: &Client, batch: Batch, tx: &mpsc::Sender<Batch>, progress: &dyn Progress) -> Result<()> {
    let ids: Vec<ChunkId> = batch.iter().map(|c| c.id).collect();
    let missing: HashSet<ChunkId> = client.missing_chunks(ids).await?.into_iter().collect();
    let (send, have): (Batch, Batch) = batch.into_iter().partition(|c| missing.contains(&c.id));
    progress.advance(have.iter().map(|c| u64::from(c.src.len)).sum());
    if !send.is_empty() && tx.send(send).await.is_err() {
        return Err(ClientError::Protocol("the upload stopped".into()));
    }
    Ok(())
}
