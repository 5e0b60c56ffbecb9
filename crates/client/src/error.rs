//! Errors of the client: the server's own message where it sent one.

use podder_core::api::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status and a message.
    #[error("{message}")]
    Api { status: u16, kind: String, message: String },
    #[error(
        "cannot reach the podder server at {base}: {source}. Is it running? Start one with `podder up`, or set PODDER_SERVER"
    )]
    Connect { base: String, source: reqwest::Error },
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
        if e.is_connect() { ClientError::Connect { base: base.to_string(), source: e } } else { ClientError::Http(e) }
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
