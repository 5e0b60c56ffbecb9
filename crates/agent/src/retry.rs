//! Calling the server through errors: which failures are worth retrying,
//! the backoff between tries, and when to give up.
//!
//! A 409 means the lease is no longer valid (the server gave the job up):
//! nothing more may be done for it. Other 4xx answers (except 408 and 429)
//! cannot succeed by repeating them. Everything else (the server is down or
//! restarting, a timeout, a 5xx) is retried until it works or the
//! [`Deadline`] passes, which only happens once the agent is shutting down.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use podder_client::ClientError;

/// The first pause between tries; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// The server answered 409: the lease is no longer valid.
    #[error("the lease is no longer valid")]
    Gone,
    /// An answer that retrying cannot change.
    #[error("{0}")]
    Refused(ClientError),
    /// Still failing when the agent had to stop trying.
    #[error("{0} (gave up: the agent is shutting down)")]
    GaveUp(ClientError),
}

/// When retries stop: unset while the agent runs; set to a moment in the
/// future when it begins to shut down. Cheap to clone; clones share it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Deadline(Arc<OnceLock<Instant>>);

impl Deadline {
    /// Sets the moment (only the first call counts).
    pub(crate) fn set(&self, at: Instant) {
        let _ = self.0.set(at);
    }
    pub(crate) fn passed(&self) -> bool {
        self.0.get().is_some_and(|at| Instant::now() >= *at)
    }
}

/// Whether a failed call is worth trying again.
pub(crate) fn is_transient(e: &ClientError) -> bool {
    match e.status() {
        Some(s) => !(400..500).contains(&s) || s == 408 || s == 429,
        None => !matches!(e, ClientError::Protocol(_)),
    }
}

/// Runs `call` until it succeeds, the lease is gone, the answer is final,
/// or `deadline` passes.
pub(crate) async fn with_retry<T, F, Fut>(what: &str, deadline: &Deadline, mut call: F) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut failures = 0u32;
    loop {
        match call().await {
            Ok(v) => {
                if failures > 0 {
                    tracing::info!("{what}: succeeded after {failures} failed tries");
                }
                return Ok(v);
            }
            Err(e) if e.status() == Some(409) => return Err(CallError::Gone),
            Err(e) if !is_transient(&e) => return Err(CallError::Refused(e)),
            Err(e) => {
                if deadline.passed() {
                    return Err(CallError::GaveUp(e));
                }
                failures += 1;
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!("{what} failed (try {failures}), retrying: {e}");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> ClientError {
        ClientError::Api { status, kind: "x".into(), message: "m".into() }
    }

    #[test]
    fn classifies_errors() {
        assert!(is_transient(&api(500)));
        assert!(is_transient(&api(503)));
        assert!(is_transient(&api(429)));
        assert!(!is_transient(&api(400)));
        assert!(!is_transient(&api(404)));
        assert!(is_transient(&ClientError::Io(std::io::Error::other("x"))));
    }

    #[tokio::test]
    async fn retries_until_success_or_gone() {
        let d = Deadline::default();
        let mut n = 0;
        let r = with_retry("t", &d, || {
            n += 1;
            let fail = n < 3;
            async move { if fail { Err(api(502)) } else { Ok(n) } }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
        let r: Result<(), _> = with_retry("t", &d, || async { Err(api(409)) }).await;
        assert!(matches!(r, Err(CallError::Gone)));
        let r: Result<(), _> = with_retry("t", &d, || async { Err(api(400)) }).await;
        assert!(matches!(r, Err(CallError::Refused(_))));
        d.set(Instant::now());
        let r: Result<(), _> = with_retry("t", &d, || async { Err(api(500)) }).await;
        assert!(matches!(r, Err(CallError::GaveUp(_))));
    }
}
