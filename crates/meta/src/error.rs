//! The one error type of the metadata store.

/// What went wrong in a metadata operation. Only the server maps these kinds
/// to HTTP statuses; the messages are meant for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// The owner, project, job or lease does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The operation clashes with the current state (a duplicate name, a
    /// job that already ended, a lease that is no longer valid).
    #[error("{0}")]
    Conflict(String),
    /// The input is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The owner's storage quota would be exceeded.
    #[error("{0}")]
    Quota(String),
    /// The database failed; not the caller's fault.
    #[error("metadata database error: {0}")]
    Internal(String),
}

pub type Result<T, E = MetaError> = std::result::Result<T, E>;

impl MetaError {
    /// The error every agent call gets once its lease was lost, superseded or
    /// the job has ended: the agent must kill the job.
    pub fn lease_gone(lease_id: &str) -> MetaError {
        MetaError::Conflict(format!(
            "lease {lease_id} is no longer valid: the job ended, was stopped or its lease expired; kill the job"
        ))
    }

    /// The message of an exceeded storage quota: what the limit is, where the
    /// owner stands, and how to get under it.
    pub fn quota_exceeded(owner: &podder_core::Name, quota: u64, used: u64, adding: u64) -> MetaError {
        MetaError::Quota(format!(
            "storage quota of {quota} bytes exceeded: {owner} uses {used} bytes and this needs {adding} more; \
             delete versions with `podder data delete NAME@vN` and run `podder admin gc`"
        ))
    }
}

impl From<podder_core::Error> for MetaError {
    fn from(e: podder_core::Error) -> Self {
        match e {
            podder_core::Error::Invalid(m) => MetaError::Invalid(m),
            t @ podder_core::Error::Transition { .. } => MetaError::Conflict(t.to_string()),
        }
    }
}

impl From<sqlx::Error> for MetaError {
    fn from(e: sqlx::Error) -> Self {
        MetaError::Internal(e.to_string())
    }
}

impl From<serde_json::Error> for MetaError {
    fn from(e: serde_json::Error) -> Self {
        MetaError::Internal(format!("stored JSON is unreadable: {e}"))
    }
}
