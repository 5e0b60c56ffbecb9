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
//! Files are mapped rather than read (see `podder_store::mapped`, which
//! keeps a file that shrinks meanwhile from killing the server); a file
//! that cannot be mapped is read with `pread`, cut and hashed by the
//! connection's thread.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use bytes::Bytes;
use fastcdc::v2020::FastCDC;
use podder_core::ChunkId;
use podder_meta::TokenHash;
use podder_store::chunker::{Sizes, chunk_stream, sizes_for};
use podder_store::ingest::{PROGRESS_EVERY, PositionalReader, Reply, Request, check_file, parse, recv, send};
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

/// Chunks, hashes and stores one file read through its descriptor: mapped
/// where possible ([`MappedFile`]: no copy of each byte into a buffer by
/// the kernel), read otherwise.
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
    match MappedFile::map(file, size) {
        Some(map) => ingest_mapped(state, rt, sock, &map, z, path),
        None => ingest_read(state, rt, sock, file, size, z, path),
    }
}

/// [`ingest_file`] through a map: this thread cuts, a writer thread copies
/// each chunk into the store's write buffer, hashes the copy and stores it,
/// with up to [`PUTS_IN_FLIGHT`] chunks between them. Ids come from the
/// copies, so a file truncated meanwhile (read as zeros past its new end)
/// cannot store bytes under an id that is not theirs; it fails the file.
fn ingest_mapped(state: &AppState, rt: &Handle, sock: &UnixStream, map: &MappedFile, z: Sizes, path: &str) -> Reply {
    let bytes = map.bytes();
    let size = bytes.len() as u64;
    let mut reply = Reply::default();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Range<usize>>(PUTS_IN_FLIGHT);
    let (gone, written) = std::thread::scope(|s| {
        let writer = s.spawn(move || write_copies(state, rt, bytes, rx));
        let mut gone = false;
        for c in FastCDC::new(bytes, z.min, z.avg, z.max) {
            reply.lens.push(c.length as u32);
            let done = (c.offset + c.length) as u64;
            if crossed_report(c.offset as u64, done, size) && send(sock, &progress(done), None).is_err() {
                // The client went away: what is stored stays, for its
                // next run; the rest of the file is not read in vain.
                gone = true;
                break;
            }
            if tx.send(c.offset..c.offset + c.length).is_err() {
                break; // the writer failed, and says why below
            }
        }
        drop(tx);
        (gone, writer.join())
    });
    match written {
        Ok(Ok(w)) => (reply.ids, reply.new_chunks, reply.new_bytes) = (w.ids, w.new_chunks, w.new_bytes),
        Ok(Err(e)) => return Reply::error(format!("{path}: {e}")),
        Err(_) => return Reply::error(format!("{path}: a chunk write failed")),
    }
    if map.changed() {
        return Reply::error(format!(
            "{path}: it changed during the upload (it became shorter than {size} bytes, or part of it could not be read); run the command again"
        ));
    }
    if gone || reply.ids.len() != reply.lens.len() {
        return Reply::error(format!("{path}: the upload stopped before the end of the file"));
    }
    reply
}

/// What a writer stored: every chunk's id, in order, and what was new.
struct Written {
    ids: Vec<ChunkId>,
    new_chunks: u64,
    new_bytes: u64,
}

/// Copies, hashes and stores the chunks of `bytes` whose ranges arrive,
/// until the channel closes; stops at the first failure.
fn write_copies(state: &AppState, rt: &Handle, bytes: &[u8], rx: Receiver<Range<usize>>) -> Result<Written, String> {
    let mut w = Written { ids: Vec::new(), new_chunks: 0, new_bytes: 0 };
    for range in rx {
        // Held per chunk, as for uploads over HTTP.
        let hold = state.grace.hold_blocking();
        let len = range.len();
        let mut fill = |dst: &mut [u8]| {
            dst.copy_from_slice(&bytes[range.clone()]);
            ChunkId::of(dst)
        };
        let stored = match state.store.put_copied_blocking(len, &mut fill) {
            Some(done) => done,
            None => {
                let data = Bytes::copy_from_slice(&bytes[range.clone()]);
                let id = ChunkId::of(&data);
                rt.block_on(state.store.put_hashed(id, data)).map(|new| (id, new))
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

/// Whether a chunk from `start` to `done` passes a progress report's mark
/// (every [`PROGRESS_EVERY`] bytes, none at the end: the answer says that).
fn crossed_report(start: u64, done: u64, size: u64) -> bool {
    done / PROGRESS_EVERY > start / PROGRESS_EVERY && done < size
}

fn progress(done: u64) -> Reply {
    // Cut, not yet stored: close enough for a progress bar.
    Reply { progress: Some(done), ..Reply::default() }
}

/// [`ingest_file`] through `pread`, where the file cannot be mapped: this
/// thread cuts and hashes, a writer thread stores, with up to
/// [`PUTS_IN_FLIGHT`] chunks between them.
fn ingest_read(
    state: &AppState,
    rt: &Handle,
    sock: &UnixStream,
    file: &File,
    size: u64,
    z: Sizes,
    path: &str,
) -> Reply {
    let mut reply = Reply::default();
    let mut reader = PositionalReader::new(file, size);
    let (tx, rx) = std::sync::mpsc::sync_channel::<(ChunkId, Bytes)>(PUTS_IN_FLIGHT);
    let (cut, written) = std::thread::scope(|s| {
        let writer = s.spawn(move || write_chunks(state, rt, rx));
        let cut = chunk_stream(&mut reader, z, |r, bytes| {
            reply.ids.push(r.id);
            reply.lens.push(r.len);
            let done = r.offset + u64::from(r.len);
            if crossed_report(r.offset, done, size) && send(sock, &progress(done), None).is_err() {
                return Ok(false); // the client went away, as above
            }
            // A closed channel: the writer failed, and says why below.
            Ok(tx.send((r.id, bytes)).is_ok())
        });
        // Every chunk sent is written (or the writer failed) before the
        // client hears back: what was stored stays, for a retry to skip.
        drop(tx);
        (cut, writer.join())
    });
    match written {
        Ok(Ok((chunks, bytes))) => (reply.new_chunks, reply.new_bytes) = (chunks, bytes),
        Ok(Err(e)) => return Reply::error(format!("{path}: {e}")),
        Err(_) => return Reply::error(format!("{path}: a chunk write failed")),
    }
    if let Err(e) = cut {
        return Reply::error(format!("{path}: cannot be read: {e}"));
    }
    if reader.position() != size {
        return Reply::error(format!(
            "{path}: it changed during the upload (it had {size} bytes, {} could be read); run the command again",
            reader.position()
        ));
    }
    reply
}

/// Stores the chunks that arrive until the channel closes; returns how many
/// (and how many bytes) were new, or the first failure (then it stops).
fn write_chunks(state: &AppState, rt: &Handle, rx: Receiver<(ChunkId, Bytes)>) -> Result<(u64, u64), String> {
    let (mut chunks, mut bytes) = (0, 0);
    for (id, data) in rx {
        // Held per chunk, as for uploads over HTTP.
        let hold = state.grace.hold_blocking();
        let stored = match state.store.put_hashed_blocking(id, &data) {
            Some(done) => done,
            None => rt.block_on(state.store.put_hashed(id, data.clone())),
        };
        let new = stored.map_err(|e| ApiError::from(e).to_string())?;
        state.grace.chunks([id]);
        drop(hold);
        if new {
            chunks += 1;
            bytes += data.len() as u64;
            state.counters.chunks_stored.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok((chunks, bytes))
}
