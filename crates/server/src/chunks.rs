//! `/chunks`: which chunks the store lacks, streamed uploads of framed
//! chunks, and streamed fetches.
//!
//! Bodies are read and written frame by frame (see
//! `podder_core::api::frames`), never buffered whole. A frame larger than
//! `max_chunk_bytes` is refused (413); a chunk that does not fit on the disk
//! answers 507 and leaves nothing behind (the pack store cuts a failed
//! record off its pack). Storing a chunk holds the garbage collector's
//! shared lock and remembers the chunk for the grace window (see `grace`).

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use podder_core::ChunkId;
use podder_core::api::{ChunkList, ChunksStored, frames};
use podder_store::BlobStore;
use podder_store::pool::BufPool;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::io::StreamReader;

use crate::error::{ApiError, ApiResult, Json};
use crate::state::AppState;

/// Chunk lists are 64 hex digits per id; this allows about a million.
const LIST_LIMIT: usize = 80 * 1024 * 1024;
/// How many store look-ups run at once when checking a list.
const PARALLEL: usize = 16;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/chunks", post(upload))
        .route("/chunks/missing", post(missing).layer(DefaultBodyLimit::max(LIST_LIMIT)))
        .route("/chunks/fetch", post(fetch).layer(DefaultBodyLimit::max(LIST_LIMIT)))
        .route("/chunks/local", axum::routing::get(local))
}

/// Where a client on this machine may hand files over by descriptor (see
/// `ingest`); 404 when this server does not listen for that.
async fn local(State(state): State<AppState>) -> ApiResult<Json<podder_core::api::LocalIngest>> {
    match state.ingest_socket.get() {
        Some((path, instance)) => {
            Ok(Json(podder_core::api::LocalIngest { socket: path.display().to_string(), instance: instance.clone() }))
        }
        None => Err(ApiError::not_found("this server takes no files by descriptor: upload over HTTP")),
    }
}

/// The ids among `ids` that the store lacks, in their order.
pub async fn absent(store: &Arc<dyn BlobStore>, ids: impl IntoIterator<Item = ChunkId>) -> ApiResult<Vec<ChunkId>> {
    let found: Vec<(ChunkId, bool)> = stream::iter(ids)
        .map(|id| async move { store.has_chunk(id).await.map(|has| (id, has)) })
        .buffered(PARALLEL)
        .try_collect()
        .await?;
    Ok(found.into_iter().filter(|(_, has)| !has).map(|(id, _)| id).collect())
}

/// The chunks the client must send. Those present are remembered as just
/// uploaded: the client will not send them, and a garbage collection must
/// not free them before its manifest is committed (see `grace`).
async fn missing(State(state): State<AppState>, Json(list): Json<ChunkList>) -> ApiResult<Json<ChunkList>> {
    let _hold = state.grace.hold().await;
    let absent = absent(&state.store, list.chunks.iter().copied()).await?;
    let lacking: std::collections::HashSet<ChunkId> = absent.iter().copied().collect();
    state.grace.chunks(list.chunks.into_iter().filter(|id| !lacking.contains(id)));
    Ok(Json(ChunkList { chunks: absent }))
}

/// Reads `buf.len()` bytes unless the stream ends first; returns how many.
async fn read_full(r: &mut (impl AsyncRead + Unpin), buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]).await? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn body_error(e: io::Error) -> ApiError {
    ApiError::invalid(format!("the upload could not be read: {e}; send it again"))
}

/// How many chunks of one upload are hashed and written at once.
const PUTS_IN_FLIGHT: usize = 4;

type PutResult = Result<bool, podder_store::StoreError>;

fn collect(done: Option<Result<PutResult, tokio::task::JoinError>>, out: &mut ChunksStored) -> ApiResult<()> {
    match done {
        Some(Ok(Ok(stored))) => {
            out.stored += stored as u64;
            Ok(())
        }
        Some(Ok(Err(podder_store::StoreError::Corrupt { expected, actual }))) => Err(ApiError::invalid(format!(
            "chunk {expected} does not match its bytes (they hash to {actual}): the upload was corrupted, send it again"
        ))),
        Some(Ok(Err(e))) => Err(e.into()),
        Some(Err(e)) => Err(ApiError::internal(format!("a chunk write failed: {e}"))),
        None => Ok(()),
    }
}

async fn upload(State(state): State<AppState>, body: Body) -> ApiResult<Json<ChunksStored>> {
    let mut out = ChunksStored { received: 0, stored: 0, bytes: 0 };
    let mut puts = Puts::new();
    let read = receive(&state, body, &mut out, &mut puts).await;
    // Chunks that arrived whole are stored even when the rest of the body
    // failed (a client killed mid-request), so a retry need not resend them.
    // The puts are detached tasks: they finish even if this future is dropped.
    let mut stored = Ok(());
    while let Some(done) = next_done(&mut puts).await {
        if let Err(e) = collect(Some(done), &mut out)
            && stored.is_ok()
        {
            stored = Err(e);
        }
    }
    read?;
    stored?;
    Ok(Json(out))
}

/// Reads frames and starts a put for each, at most [`PUTS_IN_FLIGHT`] at once.
async fn receive(state: &AppState, body: Body, out: &mut ChunksStored, puts: &mut Puts) -> ApiResult<()> {
    let stream = body.into_data_stream().map_err(io::Error::other);
    let mut reader = StreamReader::new(stream);
    loop {
        let mut header = [0u8; frames::HEADER];
        match read_full(&mut reader, &mut header).await.map_err(body_error)? {
            0 => break,
            frames::HEADER => {}
            _ => {
                return Err(ApiError::invalid("the upload ended inside a frame header: send it again"));
            }
        }
        let (id, len) = frames::parse_header(&header);
        let max = state.config.max_chunk_bytes;
        if len > max {
            return Err(ApiError::too_large(format!(
                "chunk {id} is {len} bytes, more than the server's limit of {max} bytes: cut files into smaller chunks"
            )));
        }
        let mut data = FrameBuf::take(len);
        if (&mut reader).take(len as u64).read_to_end(&mut data.0).await.map_err(body_error)? < len {
            return Err(ApiError::invalid(format!("the upload ended inside chunk {id}: send it again")));
        }
        state.counters.chunks_received.fetch_add(1, Ordering::Relaxed);
        state.counters.chunk_bytes_received.fetch_add(len as u64, Ordering::Relaxed);
        out.received += 1;
        out.bytes += len as u64;
        // Hashing (the store checks every chunk against its id), compressing
        // and writing run on blocking threads while the next frames arrive.
        if puts.len() >= PUTS_IN_FLIGHT {
            collect(next_done(puts).await, out)?;
        }
        let st = state.clone();
        puts.push_back(tokio::spawn(async move {
            // Held per chunk, not per request, so a slow upload never holds
            // up a garbage collection for long.
            let hold = st.grace.hold().await;
            let stored = st.store.put_chunk(id, Bytes::from_owner(data)).await?;
            st.grace.chunks([id]);
            drop(hold);
            if stored {
                st.counters.chunks_stored.fetch_add(1, Ordering::Relaxed);
            }
            Ok(stored)
        }));
    }
    Ok(())
}

/// A frame's buffer. Dropped (once its chunk is stored), it goes back to a
/// small pool instead of to the allocator: a fresh buffer per frame cost
/// the server a tenth of its CPU in page faults and zeroed pages.
struct FrameBuf(Vec<u8>);

/// Frame buffers given back, for reuse.
static FRAMES: BufPool = BufPool::new(32, 4 * 1024 * 1024);

impl FrameBuf {
    /// An empty buffer with room for `len` bytes.
    fn take(len: usize) -> FrameBuf {
        let mut buf = FRAMES.take();
        buf.clear();
        buf.reserve(len);
        FrameBuf(buf)
    }
}

impl AsRef<[u8]> for FrameBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for FrameBuf {
    fn drop(&mut self) {
        FRAMES.give(std::mem::take(&mut self.0));
    }
}

/// Puts in flight, oldest first.
type Puts = std::collections::VecDeque<tokio::task::JoinHandle<PutResult>>;

async fn next_done(puts: &mut Puts) -> Option<Result<PutResult, tokio::task::JoinError>> {
    match puts.pop_front() {
        Some(handle) => Some(handle.await),
        None => None,
    }
}

async fn fetch(State(state): State<AppState>, Json(list): Json<ChunkList>) -> ApiResult<Response> {
    if let Some(id) = absent(&state.store, list.chunks.iter().copied()).await?.first() {
        return Err(ApiError::not_found(format!("chunk {id} is not stored on this server: upload it first")));
    }
    let store = state.store.clone();
    // Each chunk becomes two body parts, its header and its bytes.
    let parts = stream::iter(list.chunks)
        .then(move |id| {
            let store = store.clone();
            async move {
                let data = store.get_chunk(id).await.map_err(io::Error::other)?;
                let header = Bytes::copy_from_slice(&frames::header(&id, data.len()));
                Ok::<_, io::Error>(stream::iter([Ok::<_, io::Error>(header), Ok(data)]))
            }
        })
        .try_flatten();
    Ok(([(CONTENT_TYPE, "application/octet-stream")], Body::from_stream(parts)).into_response())
}
