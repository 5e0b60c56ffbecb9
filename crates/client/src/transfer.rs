//! The transfer protocols: upload a scanned tree (ask which chunks the server
//! lacks, send only those in framed batches, commit the manifest) and
//! download a manifest's chunks into a local chunk cache.
//!
//! Every step is idempotent, so an interrupted transfer resumes by running
//! again: chunks that arrived are not sent twice.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::future::try_join_all;
use podder_core::api::frames;
use podder_core::{ChunkId, Manifest, ManifestId};
use podder_store::BlobStore;
use podder_store::scan::{ChunkSource, ScannedTree};
use tokio::sync::{Mutex, mpsc};

use crate::{Client, ClientError, Result};

mod pipeline;

pub use pipeline::upload_dir;

/// How many chunk ids one `missing` request asks about.
const ASK_BATCH: usize = 20_000;
/// The target size of one upload request body.
const SEND_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Upload requests on the wire at once: while the server stores one body,
/// the next is already arriving.
const SENDERS: usize = 2;

/// Progress of a transfer, in bytes (and files where they are counted). The
/// CLI draws a bar; others ignore it.
pub trait Progress: Send + Sync {
    fn start(&self, _total_bytes: u64) {}
    fn advance(&self, _bytes: u64) {}
    /// `done` of `total` files are through.
    fn files(&self, _done: u64, _total: u64) {}
    fn finish(&self) {}
}

/// Reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct UploadReport {
    pub manifest: Option<ManifestId>,
    pub files: usize,
    pub bytes_total: u64,
    pub chunks_total: usize,
    /// Chunks (and bytes) the server did not have: sent over HTTP, or
    /// stored by the server from files handed over by descriptor.
    pub chunks_sent: usize,
    pub bytes_sent: u64,
    /// Files handed to the server on this machine by descriptor (see
    /// [`crate::local`]), and their bytes, new or not.
    pub local_files: usize,
    pub local_bytes: u64,
}

/// A chunk to send: where to read it, and its bytes when the scan kept them
/// (then it is not read again).
struct Outgoing {
    id: ChunkId,
    src: ChunkSource,
    data: Option<pipeline::Held>,
}

/// Chunks to send.
type Batch = Vec<Outgoing>;

/// Uploads what the server lacks of `tree` and commits its manifest.
pub async fn upload_tree(client: &Client, tree: &ScannedTree, progress: &dyn Progress) -> Result<UploadReport> {
    let all: Vec<ChunkId> = tree.manifest.chunk_ids().into_iter().collect();
    let mut missing = Vec::new();
    for batch in all.chunks(ASK_BATCH) {
        missing.extend(client.missing_chunks(batch.to_vec()).await?);
    }
    let mut report = UploadReport {
        files: tree.manifest.file_count(),
        bytes_total: tree.manifest.total_size(),
        chunks_total: all.len(),
        ..Default::default()
    };
    let mut sources = Vec::with_capacity(missing.len());
    for id in &missing {
        let src = tree.sources.get(id).ok_or_else(|| {
            ClientError::Protocol(format!("the server asked for chunk {id}, which this tree does not hold"))
        })?;
        sources.push(Outgoing { id: *id, src: src.clone(), data: None });
    }
    progress.start(sources.iter().map(|o| o.src.len as u64).sum());
    let (tx, rx) = mpsc::channel::<Batch>(1);
    tx.send(sources).await.expect("the receiver is alive");
    drop(tx);
    (report.chunks_sent, report.bytes_sent) = send_batches(client, rx, progress).await?;
    let committed = client.commit_manifest(&tree.manifest).await?;
    progress.finish();
    report.manifest = Some(committed.id);
    Ok(report)
}

/// A framed request body: frames read from files into a pooled buffer, and
/// frames of bytes the scan kept, which go out as they are (not copied).
/// The server takes frames in any order.
struct Frames {
    buf: Pooled,
    kept: Vec<bytes::Bytes>,
    kept_len: usize,
}

impl Frames {
    fn len(&self) -> usize {
        self.buf.buf.len() + self.kept_len
    }

    fn into_body(self) -> reqwest::Body {
        let mut parts = self.kept;
        if !self.buf.buf.is_empty() {
            parts.push(bytes::Bytes::from_owner(self.buf));
        }
        reqwest::Body::wrap_stream(futures_util::stream::iter(parts.into_iter().map(Ok::<_, std::io::Error>)))
    }
}

/// A request body, how many chunks it holds and how many chunk bytes.
type Body = (Frames, usize, u64);

/// Sends every chunk of the batches that arrive on `batches`: a blocking
/// thread reads them into framed bodies while up to [`SENDERS`] bodies are
/// on the wire. Returns the chunks and bytes sent.
async fn send_batches(
    client: &Client,
    batches: mpsc::Receiver<Batch>,
    progress: &dyn Progress,
) -> Result<(usize, u64)> {
    let (tx, rx) = mpsc::channel::<std::io::Result<Body>>(SENDERS);
    let reader = tokio::task::spawn_blocking(move || read_bodies(batches, tx));
    let rx = Mutex::new(rx);
    let sender = || async {
        let (mut n, mut bytes) = (0usize, 0u64);
        loop {
            let next = rx.lock().await.recv().await;
            let Some(body) = next else { return Ok::<_, ClientError>((n, bytes)) };
            let (body, k, b) = body?;
            let req = client
                .req(reqwest::Method::POST, "/chunks")
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .header(reqwest::header::CONTENT_LENGTH, body.len())
                .body(body.into_body());
            let _: podder_core::api::ChunksStored = client.json(req).await?;
            progress.advance(b);
            (n, bytes) = (n + k, bytes + b);
        }
    };
    let sent = try_join_all((0..SENDERS).map(|_| sender())).await;
    // On an error the receiver is dropped here, which stops the reader.
    drop(rx);
    if let Err(e) = reader.await
        && e.is_panic()
    {
        std::panic::resume_unwind(e.into_panic());
    }
    let sent = sent?;
    Ok((sent.iter().map(|s| s.0).sum(), sent.iter().map(|s| s.1).sum()))
}

/// A request body whose buffer goes back to its pool when the request is
/// done with it: bodies are reused instead of fresh memory being mapped
/// (and faulted in) for every one.
struct Pooled {
    buf: Vec<u8>,
    pool: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        if let Ok(mut pool) = self.pool.lock()
            && pool.len() <= SENDERS + 1
        {
            pool.push(buf);
        }
    }
}

/// The reader thread of [`send_batches`]: fills bodies of about
/// [`SEND_BATCH_BYTES`], and sends a partial one whenever no batch is waiting.
fn read_bodies(mut batches: mpsc::Receiver<Batch>, tx: mpsc::Sender<std::io::Result<Body>>) {
    let pool = Arc::new(std::sync::Mutex::new(Vec::new()));
    let new_body = || {
        let buf = pool.lock().ok().and_then(|mut p| p.pop());
        let buf = buf.unwrap_or_else(|| Vec::with_capacity(SEND_BATCH_BYTES + frames::MAX_CHUNK));
        Frames { buf: Pooled { buf, pool: pool.clone() }, kept: Vec::new(), kept_len: 0 }
    };
    let mut body = new_body();
    let mut file: Option<(PathBuf, File)> = None;
    let (mut n, mut bytes) = (0usize, 0u64);
    loop {
        let batch = match batches.try_recv() {
            Ok(b) => b,
            Err(mpsc::error::TryRecvError::Empty) => {
                if n > 0 {
                    if tx.blocking_send(Ok((std::mem::replace(&mut body, new_body()), n, bytes))).is_err() {
                        return;
                    }
                    (n, bytes) = (0, 0);
                }
                // Nothing to read for now: do not hold a file open meanwhile.
                file = None;
                match batches.blocking_recv() {
                    Some(b) => b,
                    None => return,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        for chunk in batch {
            n += 1;
            bytes += u64::from(chunk.src.len);
            if let Err(e) = frame_chunk(&mut body, chunk, &mut file) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
            if body.len() >= SEND_BATCH_BYTES {
                if tx.blocking_send(Ok((std::mem::replace(&mut body, new_body()), n, bytes))).is_err() {
                    return;
                }
                (n, bytes) = (0, 0);
            }
        }
    }
    if n > 0 {
        let _ = tx.blocking_send(Ok((body, n, bytes)));
    }
}

/// Adds one chunk's frame to `frames`: the bytes the scan kept (they are
/// what was hashed), or else read straight from its file into place and
/// checked. `open` keeps the last file open, for the next chunk of the same
/// file.
fn frame_chunk(out: &mut Frames, chunk: Outgoing, open: &mut Option<(PathBuf, File)>) -> std::io::Result<()> {
    let (id, src) = (chunk.id, &chunk.src);
    if let Some(data) = chunk.data {
        let header = frames::header(&id, data.len());
        out.kept_len += header.len() + data.len();
        out.kept.push(bytes::Bytes::copy_from_slice(&header));
        out.kept.push(bytes::Bytes::from_owner(data));
        return Ok(());
    }
    let body = &mut out.buf.buf;
    let context = |e: std::io::Error| {
        std::io::Error::new(
            e.kind(),
            format!("reading {}: {e} (did the file change during the upload?)", src.path.display()),
        )
    };
    if open.as_ref().is_none_or(|(p, _)| *p != src.path) {
        *open = Some((src.path.clone(), File::open(&src.path).map_err(context)?));
    }
    let (_, file) = open.as_ref().expect("opened above");
    let start = body.len();
    let len = src.len as usize;
    body.extend_from_slice(&frames::header(&id, len));
    body.resize(start + frames::HEADER + len, 0);
    let data = &mut body[start + frames::HEADER..];
    if let Err(e) = file.read_exact_at(data, src.offset) {
        body.truncate(start);
        return Err(context(e));
    }
    if ChunkId::of(data) != id {
        body.truncate(start);
        return Err(std::io::Error::other(format!(
            "{} changed during the upload; run the command again",
            src.path.display()
        )));
    }
    Ok(())
}

/// Fetches every chunk of `manifest` that `cache` lacks into it. Returns the
/// number of bytes fetched.
pub async fn fetch_into(
    client: &Client,
    manifest: &Manifest,
    cache: &Arc<dyn BlobStore>,
    progress: &dyn Progress,
) -> Result<u64> {
    let mut missing = Vec::new();
    for id in manifest.chunk_ids() {
        if !cache.has_chunk(id).await? {
            missing.push(id);
        }
    }
    let total: u64 = chunk_sizes(manifest, &missing);
    progress.start(total);
    let mut fetched = 0;
    for batch in missing.chunks(4096) {
        let mut reader = client.fetch_chunks(batch.to_vec()).await?;
        while let Some((id, data)) = reader.next().await? {
            let n = data.len() as u64;
            cache.put_chunk(id, data).await?;
            fetched += n;
            progress.advance(n);
        }
    }
    progress.finish();
    Ok(fetched)
}

/// Approximate bytes of the given chunks, from the file sizes that hold them.
fn chunk_sizes(manifest: &Manifest, ids: &[ChunkId]) -> u64 {
    if ids.is_empty() {
        return 0;
    }
    let want: std::collections::HashSet<&ChunkId> = ids.iter().collect();
    let mut sum = 0;
    for e in &manifest.entries {
        if let podder_core::EntryKind::File { size, chunks, .. } = &e.kind
            && !chunks.is_empty()
        {
            let per = size / chunks.len() as u64;
            sum += chunks.iter().filter(|c| want.contains(c)).count() as u64 * per;
        }
    }
    sum
}

/// Downloads a manifest's tree into `dest` through the chunk cache.
pub async fn download_tree(
    client: &Client,
    id: &ManifestId,
    cache: &Arc<dyn BlobStore>,
    dest: &std::path::Path,
    progress: &dyn Progress,
) -> Result<Manifest> {
    let manifest = client.manifest(id).await?;
    fetch_into(client, &manifest, cache, progress).await?;
    podder_store::materialize::materialize(cache.as_ref(), &manifest, dest).await?;
    Ok(manifest)
}
