//! Errors of the client: the server's own message where it sent one.

use podder_core::api::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status and a message.
    #[error("{message}")]
    Api { status: u16, kind: String, message: String },
    /// No connection could be made; `cause` is the innermost reason (e.g.
    /// "Connection refused"), so the address is named once.
    #[error(
        "cannot reach the podder server at {base} ({cause}): start one with `podder up`, or set PODDER_SERVER \
         (or `podder login --server URL`) to a running server's address"
    )]
    Connect { base: String, cause: String },
    #[error("HTTP error: {0}")]
    Http(reqwest::Error),
    #[error("{0}")]
    Protocol(String),
    #[error(transparent)]
    Store(#[from] podder_store::StoreError),
    /// The local tree could not be scanned (the message lists every problem).
    #[error(transparent)]
    Scan(#[from] podder_store::scan::ScanError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl ClientError {
    pub(crate) fn connect(base: &str, e: reqwest::Error) -> ClientError {
        if e.is_connect() {
            ClientError::Connect { base: base.to_string(), cause: root_cause(&e) }
        } else {
            ClientError::Http(e)
        }
    }

    /// The HTTP status when the server answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub(crate) async fn check(resp: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let text = resp.text().await.unwrap_or_default();
    let (kind, message) = match serde_json::from_str::<ErrorBody>(&text) {
        Ok(b) => (b.kind, b.error),
        Err(_) => ("http".to_string(), format!("the server answered {status}: {text}")),
    };
    let message = if status.as_u16() == 401 {
        format!("{message} (log in with `podder login --server URL --token TOKEN`, or set PODDER_TOKEN)")
    } else {
        message
    };
    Err(ClientError::Api { status: status.as_u16(), kind, message })
}

/// The innermost error's text, without the "(os error N)" suffix: what
/// actually went wrong, where reqwest's own text repeats the URL.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let text = cur.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}
