//! The way from a job without network to its own server.
//!
//! A `--no-network` job has a network namespace with loopback only. Its
//! init listens on 127.0.0.1 inside it (the socket is handed to the agent)
//! and the job's `PODDER_SERVER` points there. The agent serves that
//! listener: one request per connection, forwarded to the server only when
//! its path is one of the job's own routes (today `/api/v1/jobs/OWNER/
//! PROJECT/N` and below; the job token, metrics and MLflow routes of later
//! issues join the list), answered 403 otherwise. The proxy adds nothing
//! to the request: no agent token ever reaches the server on a job's
//! behalf, and none reaches the job.

use std::net::TcpListener as StdListener;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The largest request head the proxy reads.
const MAX_HEAD: usize = 64 * 1024;

/// Where the proxy forwards, and what it lets through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobServer {
    /// The server's base URL (`http://host:port`).
    pub url: String,
    /// Path prefixes the job may reach (`/api/v1/jobs/alice/mnist/3`).
    pub routes: Vec<String>,
}

impl JobServer {
    /// The server's `host:port`, for plain HTTP URLs.
    pub fn address(&self) -> Option<String> {
        let rest = self.url.strip_prefix("http://")?;
        let hostport = rest.split('/').next()?;
        Some(if hostport.contains(':') && !hostport.ends_with(']') {
            hostport.to_string()
        } else {
            format!("{hostport}:80")
        })
    }

    /// The port the job's proxy listens on inside: the server's own, so
    /// that a loopback server URL reads the same inside the job.
    pub fn inside_port(&self) -> u16 {
        self.address().and_then(|a| a.rsplit(':').next()?.parse().ok()).filter(|p| *p != 0).unwrap_or(8600)
    }

    /// Whether a request for `path` may go through.
    pub fn allows(&self, path: &str) -> bool {
        let path = path.split(['?', '#']).next().unwrap_or("");
        if path.contains("/../") || path.ends_with("/..") || path.contains("//") || path.contains('%') {
            return false;
        }
        self.routes.iter().any(|r| path == r || path.strip_prefix(r.as_str()).is_some_and(|rest| rest.starts_with('/')))
    }
}

/// Serves `listener` until the returned task is aborted (when the job ends).
pub(crate) fn serve(listener: StdListener, server: JobServer) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(listener) = TcpListener::from_std(listener) else { return };
        loop {
            let Ok((conn, _)) = listener.accept().await else { continue };
            let server = server.clone();
            tokio::spawn(async move {
                if let Err(e) = handle(conn, &server).await {
                    tracing::debug!("job proxy: {e}");
                }
            });
        }
    })
}

async fn handle(mut conn: TcpStream, server: &JobServer) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() >= MAX_HEAD {
            return refuse(&mut conn, 431, "the request head is too large").await;
        }
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (method, path, version) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method.is_empty() || !path.starts_with('/') || !version.starts_with("HTTP/1.") {
        return refuse(&mut conn, 400, "not an HTTP/1 request").await;
    }
    if !server.allows(path) {
        return refuse(
            &mut conn,
            403,
            "a job without network reaches only its own routes on its server through PODDER_SERVER",
        )
        .await;
    }
    let Some(addr) = server.address() else {
        return refuse(&mut conn, 502, "the job's server is not a plain http:// URL").await;
    };
    let mut upstream = match TcpStream::connect(&addr).await {
        Ok(s) => s,
        Err(e) => return refuse(&mut conn, 502, &format!("the job's server at {addr} cannot be reached: {e}")).await,
    };
    // One request per connection: the next one on it would not be checked.
    let mut out = format!("{request_line}\r\n");
    for l in lines.filter(|l| !l.is_empty()) {
        let name = l.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        if name != "connection" && name != "keep-alive" && name != "proxy-connection" {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    upstream.write_all(out.as_bytes()).await?;
    upstream.write_all(&buf[head_end..]).await?;
    tokio::io::copy_bidirectional(&mut conn, &mut upstream).await?;
    Ok(())
}

async fn refuse(conn: &mut TcpStream, status: u16, why: &str) -> std::io::Result<()> {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        431 => "Request Header Fields Too Large",
        _ => "Bad Gateway",
    };
    let body = serde_json::json!({ "error": why }).to_string();
    let resp = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(resp.as_bytes()).await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_jobs_own_routes_pass() {
        let s = JobServer { url: "http://127.0.0.1:8123".into(), routes: vec!["/api/v1/jobs/alice/mnist/3".into()] };
        assert_eq!(s.address().as_deref(), Some("127.0.0.1:8123"));
        assert_eq!(s.inside_port(), 8123);
        for ok in ["/api/v1/jobs/alice/mnist/3", "/api/v1/jobs/alice/mnist/3/logs", "/api/v1/jobs/alice/mnist/3?x=1"] {
            assert!(s.allows(ok), "{ok}");
        }
        for bad in [
            "/api/v1/jobs/alice/mnist/30",
            "/api/v1/jobs/alice/mnist/3/../4",
            "/api/v1/jobs/alice/mnist/3/%2e%2e/4",
            "/api/v1/projects",
            "/api/v1/agent/lease",
            "/",
        ] {
            assert!(!s.allows(bad), "{bad}");
        }
        let bare = JobServer { url: "http://podder.local".into(), routes: vec![] };
        assert_eq!(bare.address().as_deref(), Some("podder.local:80"));
        assert_eq!(JobServer { url: "https://x:1".into(), routes: vec![] }.address(), None);
    }
}
