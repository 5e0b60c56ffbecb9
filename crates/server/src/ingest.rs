//! The server's side of local ingest (see `podder_store::ingest`): a Unix
//! socket on which clients of this machine hand over large files by
//! descriptor; the server chunks, hashes and stores them itself.
//!
//! Who is asking is checked as on every HTTP route: a connection must first
//! present a valid API token. The server reads only through the descriptors
//! it is given (so only what the client could open), and only regular files
//! of the size the client stated. Chunks are stored exactly as uploaded
//! ones are: under the garbage collector's shared lock, remembered for the
//! grace window, and never past a full disk (the request fails and leaves
//! nothing half-written).
//!
//! Each connection has a thread of its own (not one of tokio's blocking
//! threads, which would hold up the runtime's shutdown while a client keeps
//! its connection open), which cuts; a second thread copies, hashes and
//! writes the chunks meanwhile, straight into the store's write buffers and
//! files where the store allows (no hop through the runtime per chunk).
//! Files are mapped rather than read, 64 MiB at a time (see
//! `podder_store::mapped`, which keeps a file that shrinks meanwhile from
//! killing the server); what cannot be mapped is read with `pread`.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use bytes::Bytes;
use fastcdc::v2020::FastCDC;
use podder_core::ChunkId;
use podder_meta::TokenHash;
use podder_store::chunker::{Sizes, sizes_for, zero_chunk};
use podder_store::ingest::{Holes, PROGRESS_EVERY, Reply, Request, check_file, parse, recv, send};
use podder_store::mapped::MappedFile;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::error::ApiError;
use crate::state::AppState;

/// Chunks of one file cut and waiting for their write, at most.
const PUTS_IN_FLIGHT: usize = 8;
/// A connection that sends nothing for this long is closed.
const IDLE: Duration = Duration::from_secs(15 * 60);
/// Connections served at once (each holds a thread); more are turned away
/// with a message, and their clients upload over HTTP instead.
const MAX_CONNECTIONS: usize = 64;

/// Connections being served.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// Starts listening on `config.ingest_socket`, if set. A path that cannot
/// be used (taken by something that is not a socket, too long, in a
/// directory that cannot be written) only turns local ingest off: uploads
/// then go over HTTP as from any other machine.
pub fn start(state: &AppState) -> Option<JoinHandle<()>> {
    let path = state.config.ingest_socket.clone()?;
    let listener = match bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "local ingest is off: the socket cannot be created");
            return None;
        }
    };
    let instance = match crate::auth::random_hex::<16>() {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "local ingest is off: no random instance name");
            return None;
        }
    };
    let _ = state.ingest_socket.set((path.clone(), instance));
    let (st, mut stop) = (state.clone(), state.shutdown_signal());
    Some(tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted.and_then(|(s, _)| s.into_std()),
                _ = stop.wait_for(|s| *s) => break,
            };
            match accepted {
                Ok(sock) => spawn_connection(st.clone(), sock),
                Err(e) => {
                    tracing::warn!(error = %e, "local ingest: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let _ = std::fs::remove_file(&path);
    }))
}

fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    // A socket left by an earlier run is replaced; anything else is kept.
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => return Err(std::io::Error::other("something other than a socket is in the way")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    // Anyone on the machine may connect: a connection must present a token
    // before anything else, as over HTTP.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

fn spawn_connection(state: AppState, sock: UnixStream) {
    if OPEN.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
        OPEN.fetch_sub(1, Ordering::AcqRel);
        let _ = sock.set_nonblocking(false);
        let msg = format!("the server takes {MAX_CONNECTIONS} connections at once: upload over HTTP");
        let _ = send(&sock, &Reply::error(msg), None);
        return;
    }
    let rt = Handle::current();
    let started = std::thread::Builder::new().name("ingest".into()).spawn(move || {
        if sock.set_nonblocking(false).and_then(|_| sock.set_read_timeout(Some(IDLE))).is_ok() {
            serve(&state, &rt, &sock);
        }
        OPEN.fetch_sub(1, Ordering::AcqRel);
    });
    if let Err(e) = started {
        OPEN.fetch_sub(1, Ordering::AcqRel);
        tracing::warn!(error = %e, "local ingest: no thread for a connection");
    }
}

/// One connection: `hello`, then `file` requests until the client closes it.
fn serve(state: &AppState, rt: &Handle, sock: &UnixStream) {
    let Ok(Some((body, _))) = recv(sock) else { return };
    let hello = match parse::<Request>(&body) {
        Ok(Request::Hello { token }) => rt.block_on(state.meta.owner_by_token(&TokenHash::of(&token))),
        _ => {
            let _ = send(sock, &Reply::error("the first message must be a hello with an API token"), None);
            return;
        }
    };
    let owner = match hello {
        Ok(Some(owner)) => owner,
        Ok(None) => {
            let msg = "the API token is not valid on this server: check PODDER_TOKEN or ask an admin for a new token";
            let _ = send(sock, &Reply::error(msg), None);
            return;
        }
        Err(e) => {
            let _ = send(sock, &Reply::error(ApiError::from(e).to_string()), None);
            return;
        }
    };
    let instance = state.ingest_socket.get().map(|(_, i)| i.clone());
    if send(sock, &Reply { owner: Some(owner.name.to_string()), instance, ..Reply::default() }, None).is_err() {
        return;
    }
    loop {
        let (body, mut fds) = match recv(sock) {
            Ok(Some(msg)) => msg,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(owner = %owner.name, error = %e, "local ingest: connection ended");
                return;
            }
        };
        let reply = match parse::<Request>(&body) {
            Ok(Request::File { size, path }) if fds.len() == 1 => {
                let file = File::from(fds.pop().expect("one descriptor"));
                ingest_file(state, rt, sock, &file, size, &path)
            }
            Ok(Request::File { path, .. }) => {
                Reply::error(format!("{path}: a file request needs exactly one descriptor, {} came", fds.len()))
            }
            Ok(Request::Hello { .. }) => Reply::error("this connection has said hello already"),
            Err(e) => Reply::error(format!("the request is not valid: {e}")),
        };
        drop(fds);
        if send(sock, &reply, None).is_err() {
            return;
        }
    }
}

/// Chunks, hashes and stores one file read through its descriptor: this
/// thread cuts, a writer thread copies each chunk into the store's write
/// buffer, hashes the copy and stores it, with up to [`PUTS_IN_FLIGHT`]
/// chunks between them. The file is taken [`SEGMENT`] bytes at a time,
/// mapped ([`MappedFile`]: no copy by the kernel) or, where it cannot be,
/// read. Ids come from the writer's copies, so a file truncated meanwhile
/// (read as zeros past its new end) cannot store bytes under an id that is
/// not theirs; it fails the file.
fn ingest_file(state: &AppState, rt: &Handle, sock: &UnixStream, file: &File, size: u64, path: &str) -> Reply {
    if let Err(why) = check_file(file, size) {
        return Reply::error(format!("{path}: {why}"));
    }
    let z = sizes_for(size);
    let max = state.config.max_chunk_bytes;
    if z.max > max {
        return Reply::error(format!(
            "{path}: its chunks may be {} bytes, more than the server's limit of {max} bytes",
            z.max
        ));
    }
    let changed = Arc::new(AtomicBool::new(false));
    let mut reply = Reply::default();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Piece>(PUTS_IN_FLIGHT);
    let (cut, written) = std::thread::scope(|s| {
        let writer = s.spawn(move || write_copies(state, rt, rx));
        let cut = cut_segments(file, size, z, &changed, |start, piece| {
            reply.lens.push(piece.len() as u32);
            let done = start + piece.len() as u64;
            if done / PROGRESS_EVERY > start / PROGRESS_EVERY && done < size {
                // Cut, not yet stored: close enough for a progress bar.
                let progress = Reply { progress: Some(done), ..Reply::default() };
                if send(sock, &progress, None).is_err() {
                    // The client went away: what is stored stays, for its
                    // next run; the rest of the file is not read in vain.
                    return Err(io::Error::other("the client went away"));
                }
            }
            // A closed channel: the writer failed, and says why below.
            tx.send(piece).map_err(|_| io::Error::other("the writer stopped"))
        });
        // Every chunk sent is written (or the writer failed) before the
        // client hears back: what was stored stays, for a retry to skip.
        drop(tx);
        (cut, writer.join())
    });
    match written {
        Ok(Ok(w)) => (reply.ids, reply.new_chunks, reply.new_bytes) = (w.ids, w.new_chunks, w.new_bytes),
        Ok(Err(e)) => return Reply::error(format!("{path}: {e}")),
        Err(_) => return Reply::error(format!("{path}: a chunk write failed")),
    }
    if changed.load(Ordering::SeqCst) {
        return Reply::error(format!(
            "{path}: it changed during the upload (it became shorter than {size} bytes, or part of it could not be \
             read); run the command again"
        ));
    }
    // Cut while it changed size (holes are not read, so only its size says).
    if let (Ok(()), Err(why)) = (&cut, check_file(file, size)) {
        return Reply::error(format!("{path}: {why}; run the command again"));
    }
    match cut {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Reply::error(format!(
            "{path}: it changed during the upload (it had {size} bytes, fewer could be read); run the command again"
        )),
        Err(e) => Reply::error(format!("{path}: cannot be read: {e}")),
        Ok(()) if reply.ids.len() != reply.lens.len() => {
            Reply::error(format!("{path}: the upload stopped before the end of the file"))
        }
        Ok(()) => reply,
    }
}

/// A file is cut from segments of this many bytes at a time: a whole large
/// file mapped at once would keep a page-table entry per 4 KiB page to its
/// end (200 MiB of them for a 100 GiB file).
const SEGMENT: u64 = 64 * 1024 * 1024;

/// A segment that cannot be mapped is read into memory: this much, so
/// that many connections reading at once hold little memory.
const READ_SEGMENT: u64 = 8 * 1024 * 1024;

/// Segments start at multiples of this (a multiple of every page size).
const SEGMENT_ALIGN: u64 = 64 * 1024;

/// Part of a file: mapped, or read where it cannot be.
struct Segment {
    source: Source,
    /// Set when the segment is dropped if the file shrank under its map.
    changed: Arc<AtomicBool>,
}

enum Source {
    Mapped(MappedFile),
    Read(Vec<u8>),
}

impl Segment {
    /// The segment of a `size`-byte file from `start`: [`SEGMENT`] bytes
    /// mapped, or, where they cannot be, [`READ_SEGMENT`] bytes read.
    fn load(file: &File, start: u64, size: u64, changed: &Arc<AtomicBool>) -> io::Result<Segment> {
        let source = match MappedFile::map_range(file, start, (size - start).min(SEGMENT)) {
            Some(map) => Source::Mapped(map),
            None => {
                let mut buf = vec![0; (size - start).min(READ_SEGMENT) as usize];
                file.read_exact_at(&mut buf, start)?;
                Source::Read(buf)
            }
        };
        Ok(Segment { source, changed: changed.clone() })
    }

    fn zeros(len: usize, changed: &Arc<AtomicBool>) -> Segment {
        Segment { source: Source::Read(vec![0; len]), changed: changed.clone() }
    }

    fn bytes(&self) -> &[u8] {
        match &self.source {
            Source::Mapped(map) => map.bytes(),
            Source::Read(buf) => buf,
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if let Source::Mapped(map) = &self.source
            && map.changed()
        {
            self.changed.store(true, Ordering::SeqCst);
        }
    }
}

/// A chunk cut from a file: bytes of a segment, or zeros of a hole.
enum Piece {
    Bytes(Arc<Segment>, Range<usize>),
    /// A chunk of zeros (its length and id) cut in a hole without reading it.
    Zeros(usize, ChunkId),
}

impl Piece {
    fn len(&self) -> usize {
        match self {
            Piece::Bytes(_, range) => range.len(),
            Piece::Zeros(len, _) => *len,
        }
    }
}

/// Cuts the file's `size` bytes as the client's chunker cuts a whole file,
/// a segment at a time, handing each chunk and its offset to `emit` in
/// order. A cut is final only with a whole `z.max` after the chunk's start,
/// or the end of the file; the rest starts the next segment. Holes (of a
/// sparse file) of a largest chunk and more are cut without being read:
/// every chunk cut in one is [`zero_chunk`]'s.
fn cut_segments(
    file: &File,
    size: u64,
    z: Sizes,
    changed: &Arc<AtomicBool>,
    mut emit: impl FnMut(u64, Piece) -> io::Result<()>,
) -> io::Result<()> {
    let holes = Holes::new(file)?;
    let max = z.max as u64;
    let mut zero = None;
    let mut pos = 0;
    while pos < size {
        let data = match holes.data_from(pos)? {
            Some(data) => data.min(size),
            // A hole to the end, or the file is shorter now: not zeros then.
            None if file.metadata()?.len() < size => return Err(io::ErrorKind::UnexpectedEof.into()),
            None => size,
        };
        if data >= pos + max {
            let (len, id) = *zero.get_or_insert_with(|| zero_chunk(z));
            while pos + max <= data {
                emit(pos, Piece::Zeros(len, id))?;
                pos += len as u64;
            }
            continue;
        }
        // Data within a largest chunk: cut up to the next hole (past it only
        // to end a chunk), then look again.
        let stop = if data < size { holes.hole_from(data)? } else { size };
        let (start, seg) = if data < size {
            let start = pos - pos % SEGMENT_ALIGN;
            (start, Segment::load(file, start, size, changed)?)
        } else {
            // The file ends in this hole: its zeros, not read either.
            (pos, Segment::zeros((size - pos) as usize, changed))
        };
        let seg = Arc::new(seg);
        let bytes = seg.bytes();
        let eof = start + bytes.len() as u64 == size;
        let cdc = FastCDC::new(bytes, z.min, z.avg, z.max);
        let mut at = (pos - start) as usize;
        while at < bytes.len()
            && (eof || bytes.len() - at >= z.max)
            && (start + at as u64 == pos || start + (at as u64) < stop)
        {
            let (_, end) = cdc.cut(at, bytes.len() - at);
            emit(start + at as u64, Piece::Bytes(seg.clone(), at..end))?;
            at = end;
        }
        if start + at as u64 == pos {
            // Never with today's sizes (segments are far longer than chunks).
            return Err(io::Error::other("a segment shorter than the largest chunk"));
        }
        pos = start + at as u64;
    }
    Ok(())
}

/// What a writer stored: every chunk's id, in order, and what was new.
struct Written {
    ids: Vec<ChunkId>,
    new_chunks: u64,
    new_bytes: u64,
}

/// Copies, hashes and stores the chunks that arrive, until the channel
/// closes; stops at the first failure.
fn write_copies(state: &AppState, rt: &Handle, rx: Receiver<Piece>) -> Result<Written, String> {
    let mut w = Written { ids: Vec::new(), new_chunks: 0, new_bytes: 0 };
    for piece in rx {
        // Held per chunk, as for uploads over HTTP.
        let hold = state.grace.hold_blocking();
        let len = piece.len();
        let mut fill = |dst: &mut [u8]| match &piece {
            Piece::Bytes(seg, range) => {
                dst.copy_from_slice(&seg.bytes()[range.clone()]);
                ChunkId::of(dst)
            }
            Piece::Zeros(_, id) => {
                dst.fill(0);
                *id
            }
        };
        let stored = match state.store.put_copied_blocking(len, &mut fill) {
            Some(done) => done,
            None => {
                let mut data = vec![0; len];
                let id = fill(&mut data);
                rt.block_on(state.store.put_hashed(id, Bytes::from(data))).map(|new| (id, new))
            }
        };
        let (id, new) = stored.map_err(|e| ApiError::from(e).to_string())?;
        state.grace.chunks([id]);
        drop(hold);
        w.ids.push(id);
        if new {
            w.new_chunks += 1;
            w.new_bytes += len as u64;
            state.counters.chunks_stored.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(w)
}
