//! Handing large files to a server on this machine by descriptor (see
//! `podder_store::ingest`): the server chunks, hashes and stores them
//! itself, which costs about half the CPU of hashing them here and sending
//! every byte over TCP.
//!
//! Used only when the server's URL is a loopback address, the server
//! names a socket that exists here, and that socket's `hello` answers with
//! the same server instance and accepts the token. Anything else (a server
//! in a container, on another host, an older server) leaves uploads on HTTP.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Mutex;

use podder_store::ingest::{Ingest, IngestError, Ingested, Reply, Request, parse, recv, send};

use crate::Client;

/// Connections to one server's ingest socket; one per scanning thread.
pub struct LocalIngest {
    socket: PathBuf,
    token: String,
    instance: String,
    idle: Mutex<Vec<UnixStream>>,
}

impl std::fmt::Debug for LocalIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIngest").field("socket", &self.socket).finish()
    }
}

/// Is this base URL's host this machine?
fn is_loopback(base: &str) -> bool {
    let Some(url) = reqwest::Url::parse(base).ok() else { return false };
    // An IPv6 host comes in brackets.
    let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn broken(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(IngestError(format!("the connection to the server on this machine failed: {e}")))
}

impl LocalIngest {
    /// The server's ingest, when `client`'s server is on this machine and
    /// takes files by descriptor; `None` otherwise.
    pub async fn discover(client: &Client) -> Option<LocalIngest> {
        if !client.local_ingest_enabled() || !is_loopback(client.base_url()) {
            return None;
        }
        let info = client.local_ingest().await.ok()?;
        let ingest = LocalIngest {
            socket: PathBuf::from(info.socket),
            token: client.token().to_string(),
            instance: info.instance,
            idle: Mutex::new(Vec::new()),
        };
        // One connection proves the socket is this server's; it is kept.
        tokio::task::spawn_blocking(move || {
            let conn = ingest.connect().ok()?;
            ingest.give_back(conn);
            Some(ingest)
        })
        .await
        .ok()
        .flatten()
    }

    fn connect(&self) -> io::Result<UnixStream> {
        let sock = UnixStream::connect(&self.socket).map_err(broken)?;
        send(&sock, &Request::Hello { token: self.token.clone() }, None).map_err(broken)?;
        let reply = read_reply(&sock)?;
        if let Some(e) = reply.error {
            return Err(io::Error::other(IngestError(e)));
        }
        if reply.instance.as_deref() != Some(self.instance.as_str()) {
            return Err(io::Error::other(IngestError("the socket belongs to another server".into())));
        }
        Ok(sock)
    }

    fn give_back(&self, sock: UnixStream) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(sock);
    }
}

fn read_reply(sock: &UnixStream) -> io::Result<Reply> {
    match recv(sock).map_err(broken)? {
        Some((body, _)) => parse(&body).map_err(broken),
        None => Err(broken("it closed the connection")),
    }
}

impl Ingest for LocalIngest {
    fn ingest(&self, file: &File, len: u64, rel: &str, progress: &dyn Fn(u64)) -> io::Result<Option<Ingested>> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let sock = match idle {
            Some(s) => s,
            // No connection now (the server has as many as it takes): this
            // file is hashed here and sent over HTTP.
            None => match self.connect() {
                Ok(s) => s,
                Err(_) => return Ok(None),
            },
        };
        send(&sock, &Request::File { size: len, path: rel.to_string() }, Some(file.as_fd())).map_err(broken)?;
        let reply = loop {
            let reply = read_reply(&sock)?;
            match reply.progress {
                Some(done) => progress(done),
                None => break reply,
            }
        };
        if let Some(e) = reply.error {
            // The connection is still good: the next file may use it.
            self.give_back(sock);
            return Err(io::Error::other(IngestError(e)));
        }
        let chunks = reply.chunk_refs().map_err(broken)?;
        self.give_back(sock);
        Ok(Some(Ingested { chunks, new_chunks: reply.new_chunks, new_bytes: reply.new_bytes }))
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn only_loopback_urls_are_this_machine() {
        for yes in ["http://127.0.0.1:8663", "http://localhost:1/", "http://[::1]:80", "http://127.1.2.3"] {
            assert!(is_loopback(yes), "{yes}");
        }
        for no in ["http://10.0.0.1:8663", "https://podder.example.com", "http://[2001:db8::1]:1"] {
            assert!(!is_loopback(no), "{no}");
        }
    }
}
