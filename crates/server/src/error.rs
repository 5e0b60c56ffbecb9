//! The server's one error type, the only place where error kinds become HTTP
//! statuses, and the JSON/path/query extractors whose rejections use it.
//!
//! Every error response is a `podder_core::api::ErrorBody`. Messages say what
//! was wrong and what to do; internal errors are logged in full.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use podder_core::api::ErrorBody;
use podder_meta::MetaError;
use podder_store::StoreError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Invalid,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    TooLarge,
    /// An owner's storage quota would be exceeded (413, like other limits).
    QuotaExceeded,
    /// The server's disk is full (507).
    InsufficientStorage,
    Internal,
}

impl Kind {
    pub fn status(self) -> StatusCode {
        match self {
            Kind::Invalid => StatusCode::BAD_REQUEST,
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::Conflict => StatusCode::CONFLICT,
            Kind::TooLarge | Kind::QuotaExceeded => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable `kind` of the error body.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Invalid => "invalid",
            Kind::Unauthorized => "unauthorized",
            Kind::Forbidden => "forbidden",
            Kind::NotFound => "not_found",
            Kind::Conflict => "conflict",
            Kind::TooLarge => "too_large",
            Kind::QuotaExceeded => "quota_exceeded",
            Kind::InsufficientStorage => "insufficient_storage",
            Kind::Internal => "internal",
        }
    }
}

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    pub kind: Kind,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(kind: Kind, message: impl Into<String>) -> ApiError {
        ApiError { kind, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(Kind::Invalid, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(Kind::Unauthorized, message)
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(Kind::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(Kind::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(Kind::Conflict, message)
    }
    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(Kind::TooLarge, message)
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(Kind::Internal, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.kind == Kind::Internal {
            tracing::error!(error = %self.message, "internal error");
        }
        let body = ErrorBody { error: self.message, kind: self.kind.as_str().to_string() };
        (self.kind.status(), axum::Json(body)).into_response()
    }
}

impl From<MetaError> for ApiError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::NotFound(m) => ApiError::not_found(m),
            MetaError::Conflict(m) => ApiError::conflict(m),
            MetaError::Invalid(m) => ApiError::invalid(m),
            MetaError::Quota(m) => ApiError::new(Kind::QuotaExceeded, m),
            MetaError::Internal(m) => ApiError::internal(m),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => ApiError::not_found(format!("{e}: upload it first")),
            StoreError::Corrupt { .. } | StoreError::CorruptManifest { .. } | StoreError::Invalid(_) => {
                ApiError::invalid(e.to_string())
            }
            StoreError::Io(ref io) if disk_full(io).is_some() => {
                // The path in the I/O error is the server's business: logged, not sent.
                tracing::error!(error = %e, "object store write failed: disk full");
                ApiError::new(
                    Kind::InsufficientStorage,
                    format!(
                        "the server's disk is full: {}; nothing half-written was kept. Ask an admin to free space \
                         (delete dataset versions, run `podder admin gc`), then send the upload again",
                        disk_full(io).unwrap_or_default()
                    ),
                )
            }
            // I/O and whatever the store adds later: not the caller's fault.
            #[allow(unreachable_patterns)]
            _ => ApiError::internal(e.to_string()),
        }
    }
}

/// What filled up, when an I/O error says the disk (ENOSPC) or the disk
/// quota (EDQUOT) is full.
fn disk_full(e: &std::io::Error) -> Option<&'static str> {
    match e.kind() {
        std::io::ErrorKind::StorageFull => Some("no space is left on the device"),
        std::io::ErrorKind::QuotaExceeded => Some("the filesystem quota is exceeded"),
        _ => None,
    }
}

impl From<podder_core::Error> for ApiError {
    fn from(e: podder_core::Error) -> Self {
        match e {
            podder_core::Error::Invalid(m) => ApiError::invalid(m),
            t @ podder_core::Error::Transition { .. } => ApiError::conflict(t.to_string()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::new(Kind::TooLarge, "the request body is too large: send it in smaller parts");
        }
        ApiError::invalid(format!("the request body is not valid: {}", r.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::invalid(format!("the URL is not valid: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::invalid(format!("the query string is not valid: {}", r.body_text()))
    }
}

/// A JSON body in or out; a malformed request body answers an [`ApiError`].
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Path parameters; a malformed one answers an [`ApiError`].
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// Query parameters; a malformed one answers an [`ApiError`].
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// The answer for every route that does not exist.
pub async fn no_route() -> ApiError {
    ApiError::not_found("there is no such API route: check the URL and the server version")
}
