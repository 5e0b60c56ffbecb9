//! Helpers for the local-ingest tests: a server with an ingest socket, and
//! the client's side of its protocol.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use podder_core::ChunkId;
use podder_core::api::{ChunkList, LocalIngest, frames};
use podder_store::ingest::{Reply, Request, parse, recv, send};

use super::TestServer;

pub async fn ingest_server() -> TestServer {
    TestServer::with_config(|c| c.ingest_socket = Some(c.data_dir.join("ingest.sock"))).await
}

/// A server with an ingest socket, alice's token, and what the server says
/// of its socket.
pub async fn setup() -> (TestServer, String, LocalIngest) {
    let ts = ingest_server().await;
    let alice = ts.token("alice").await;
    let info: LocalIngest = ts.get(&alice, "/chunks/local").send().await.unwrap().json().await.unwrap();
    (ts, alice, info)
}

/// Sends a request; returns the final answer, and the progress reported
/// before it.
pub fn ask_with_progress(sock: &UnixStream, req: &Request, fd: Option<&File>) -> (Reply, Vec<u64>) {
    send(sock, req, fd.map(|f| f.as_fd())).unwrap();
    let mut progress = Vec::new();
    loop {
        let (body, _) = recv(sock).unwrap().expect("an answer");
        let reply: Reply = parse(&body).unwrap();
        match reply.progress {
            Some(done) => progress.push(done),
            None => return (reply, progress),
        }
    }
}

pub fn ask(sock: &UnixStream, req: &Request, fd: Option<&File>) -> Reply {
    ask_with_progress(sock, req, fd).0
}

pub fn hello(path: &Path, token: &str) -> (UnixStream, Reply) {
    let sock = UnixStream::connect(path).unwrap();
    let reply = ask(&sock, &Request::Hello { token: token.into() }, None);
    (sock, reply)
}

pub fn random_file(dir: &Path, name: &str, len: usize) -> PathBuf {
    let mut data = vec![0u8; len];
    getrandom::fill(&mut data).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// Runs blocking socket work off the runtime the server's ingest threads use.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Hands `file` over whole on a fresh connection as `token`: the answer,
/// and the progress reported before it.
pub async fn hand_over(info: &LocalIngest, token: &str, file: &Path) -> (Reply, Vec<u64>) {
    let (socket, token, file) = (PathBuf::from(&info.socket), token.to_string(), file.to_path_buf());
    blocking(move || {
        let (sock, _) = hello(&socket, &token);
        let f = File::open(&file).unwrap();
        let (size, name) = (f.metadata().unwrap().len(), file.file_name().unwrap().to_string_lossy().into());
        ask_with_progress(&sock, &Request::File { size, path: name }, Some(&f))
    })
    .await
}

/// The bytes of `ids`, one after the other, fetched over HTTP.
pub async fn fetch(ts: &TestServer, token: &str, ids: Vec<ChunkId>) -> Vec<u8> {
    let r = ts.post(token, "/chunks/fetch").json(&ChunkList { chunks: ids }).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let body = r.bytes().await.unwrap();
    let (mut at, mut fetched) = (0, Vec::new());
    while at < body.len() {
        let header: &[u8; frames::HEADER] = body[at..at + frames::HEADER].try_into().unwrap();
        let (_, len) = frames::parse_header(header);
        at += frames::HEADER;
        fetched.extend_from_slice(&body[at..at + len]);
        at += len;
    }
    fetched
}

/// Hands `file` (`size` bytes) over and, once the server reports its first
/// progress, cuts the file to 1 MiB; returns the server's answer.
pub fn shrink_during_upload(socket: &Path, token: &str, file: &Path, size: u64) -> Reply {
    let (sock, _) = hello(socket, token);
    let f = File::open(file).unwrap();
    send(&sock, &Request::File { size, path: file.file_name().unwrap().to_string_lossy().into() }, Some(f.as_fd()))
        .unwrap();
    let mut cut = false;
    loop {
        let (body, _) = recv(&sock).unwrap().expect("an answer");
        let reply: Reply = parse(&body).unwrap();
        if reply.progress.is_none() {
            assert!(cut, "the answer came before any progress report");
            return reply;
        }
        if !cut {
            File::options().write(true).open(file).unwrap().set_len(1 << 20).unwrap();
            cut = true;
        }
    }
}
