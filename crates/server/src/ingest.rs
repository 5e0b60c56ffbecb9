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
//! its connection open); the chunks' writes run on the runtime, a few at a
//! time, while the thread cuts the next ones.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use podder_meta::TokenHash;
use podder_store::StoreError;
use podder_store::chunker::{chunk_stream, sizes_for};
use podder_store::ingest::{PositionalReader, Reply, Request, check_file, parse, recv, send};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::error::ApiError;
use crate::state::AppState;

/// Chunk writes of one file in flight at once.
const PUTS_IN_FLIGHT: usize = 8;
/// A connection that sends nothing for this long is closed.
const IDLE: Duration = Duration::from_secs(15 * 60);

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
    let rt = Handle::current();
    let started = std::thread::Builder::new().name("ingest".into()).spawn(move || {
        if sock.set_nonblocking(false).and_then(|_| sock.set_read_timeout(Some(IDLE))).is_ok() {
            serve(&state, &rt, &sock);
        }
    });
    if let Err(e) = started {
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
                ingest_file(state, rt, &file, size, &path)
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

type Put = JoinHandle<Result<(bool, u32), StoreError>>;

/// Chunks, hashes and stores one file read through its descriptor.
fn ingest_file(state: &AppState, rt: &Handle, file: &File, size: u64, path: &str) -> Reply {
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
    let mut reply = Reply::default();
    let mut puts: VecDeque<Put> = VecDeque::new();
    let mut failed: Option<String> = None;
    let mut reader = PositionalReader::new(file, size);
    let cut = chunk_stream(&mut reader, z, |r, bytes| {
        reply.ids.push(r.id);
        reply.lens.push(r.len);
        if puts.len() >= PUTS_IN_FLIGHT
            && let Err(e) = settle(rt, puts.pop_front(), &mut reply)
        {
            failed = Some(e);
            return Ok(false);
        }
        let st = state.clone();
        puts.push_back(rt.spawn(async move {
            // Held per chunk, as for uploads over HTTP.
            let hold = st.grace.hold().await;
            let new = st.store.put_hashed(r.id, bytes).await?;
            st.grace.chunks([r.id]);
            drop(hold);
            Ok((new, r.len))
        }));
        Ok(true)
    });
    // Every write started is waited for, also after a failure: what was
    // stored stays (a retry need not store it again), and nothing is left
    // writing once the client hears back.
    while let Some(put) = puts.pop_front() {
        if let Err(e) = settle(rt, Some(put), &mut reply)
            && failed.is_none()
        {
            failed = Some(e);
        }
    }
    if let Err(e) = cut {
        return Reply::error(format!("{path}: cannot be read: {e}"));
    }
    if let Some(e) = failed {
        return Reply::error(format!("{path}: {e}"));
    }
    if reader.position() != size {
        return Reply::error(format!(
            "{path}: it changed during the upload (it had {size} bytes, {} could be read); run the command again",
            reader.position()
        ));
    }
    state.counters.chunks_stored.fetch_add(reply.new_chunks, Ordering::Relaxed);
    reply
}

/// Waits for one write and counts what it stored.
fn settle(rt: &Handle, put: Option<Put>, reply: &mut Reply) -> Result<(), String> {
    let Some(put) = put else { return Ok(()) };
    match rt.block_on(put) {
        Ok(Ok((new, len))) => {
            if new {
                reply.new_chunks += 1;
                reply.new_bytes += u64::from(len);
            }
            Ok(())
        }
        Ok(Err(e)) => Err(ApiError::from(e).to_string()),
        Err(e) => Err(format!("a chunk write failed: {e}")),
    }
}
