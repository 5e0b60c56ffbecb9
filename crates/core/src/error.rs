//! The one error type of the domain core.

/// A domain error: always the caller's input that was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input is malformed; the message says what was wrong and what to do.
    #[error("{0}")]
    Invalid(String),
    /// A state change that the job lifecycle does not allow.
    #[error("a job cannot go from {from} to {to}")]
    Transition { from: String, to: String },
}

pub(crate) fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}
