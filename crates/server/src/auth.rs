//! Who is calling and what they may see: bearer tokens, the middleware that
//! checks them on every route, and the lookups of projects, jobs and
//! datasets that answer a foreign owner's name exactly like a missing one.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use podder_core::Name;
use podder_core::api::{Dataset, Project};
use podder_meta::{JobRecord, MetaError, TokenHash};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub owner: Name,
    pub admin: bool,
}

impl Caller {
    /// Agent routes hand out and report on every owner's jobs, so only an
    /// admin token may use them (agents run with one).
    pub fn require_agent(&self) -> Result<(), ApiError> {
        if self.admin {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "only an agent may call agent routes: start agents with an admin token (`podder agent --token ...`)",
            ))
        }
    }

    /// Admins act on every owner; everyone else only on themselves.
    pub fn may_act_for(&self, owner: &Name) -> bool {
        self.admin || &self.owner == owner
    }
}

/// A new API token: `pdr_` and 64 hex digits of randomness.
pub fn new_token() -> anyhow::Result<String> {
    Ok(format!("pdr_{}", random_hex::<32>()?))
}

/// `N` random bytes as hex (tokens, lease ids).
pub fn random_hex<const N: usize>() -> anyhow::Result<String> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Middleware on every API route: resolves the bearer token to a [`Caller`].
pub async fn require_token(State(state): State<AppState>, mut req: Request, next: Next) -> Result<Response, ApiError> {
    let header = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim) else {
        return Err(ApiError::unauthorized(
            "this request needs an API token: send 'Authorization: Bearer <token>' (set PODDER_TOKEN, or use the token printed at the server's first start)",
        ));
    };
    let owner = state.meta.owner_by_token(&TokenHash::of(token)).await?;
    let Some(owner) = owner else {
        return Err(ApiError::unauthorized(
            "the API token is not valid on this server: check PODDER_TOKEN or ask an admin for a new token",
        ));
    };
    req.extensions_mut().insert(Caller { owner: owner.name, admin: owner.admin });
    Ok(next.run(req).await)
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("this request needs an API token"))
    }
}

fn project_not_found(owner: &Name, name: &Name) -> ApiError {
    ApiError::not_found(format!(
        "there is no project {owner}/{name} that you can see: check the name, or create it with `podder init {name}`"
    ))
}

fn job_not_found(owner: &Name, project: &Name, number: u64) -> ApiError {
    ApiError::not_found(format!(
        "there is no job {owner}/{project}#{number} that you can see: list the project's jobs with `podder status`"
    ))
}

fn dataset_not_found(owner: &Name, name: &Name) -> ApiError {
    ApiError::not_found(format!(
        "there is no dataset {owner}/{name} that you can see: list your datasets with `podder data list`"
    ))
}

fn hide(e: MetaError, not_found: impl FnOnce() -> ApiError) -> ApiError {
    match e {
        MetaError::NotFound(_) => not_found(),
        e => e.into(),
    }
}

/// A project the caller may see.
pub async fn project(state: &AppState, caller: &Caller, owner: &Name, name: &Name) -> ApiResult<Project> {
    if !caller.may_act_for(owner) {
        return Err(project_not_found(owner, name));
    }
    state.meta.get_project(owner, name).await.map_err(|e| hide(e, || project_not_found(owner, name)))
}

/// A dataset the caller may see.
pub async fn dataset(state: &AppState, caller: &Caller, owner: &Name, name: &Name) -> ApiResult<Dataset> {
    if !caller.may_act_for(owner) {
        return Err(dataset_not_found(owner, name));
    }
    state.meta.get_dataset(owner, name).await.map_err(|e| hide(e, || dataset_not_found(owner, name)))
}

/// Maps a store's "not found" for a dataset to the uniform message.
pub fn hide_dataset(e: MetaError, owner: &Name, name: &Name) -> ApiError {
    hide(e, || dataset_not_found(owner, name))
}

/// A job the caller may see.
pub async fn job(state: &AppState, caller: &Caller, owner: &Name, project: &Name, number: u64) -> ApiResult<JobRecord> {
    if !caller.may_act_for(owner) {
        return Err(job_not_found(owner, project, number));
    }
    state.meta.get_job(owner, project, number).await.map_err(|e| hide(e, || job_not_found(owner, project, number)))
}

/// Checks that the caller may act on a job before an operation on it.
pub fn check_job_access(caller: &Caller, owner: &Name, project: &Name, number: u64) -> ApiResult<()> {
    if caller.may_act_for(owner) { Ok(()) } else { Err(job_not_found(owner, project, number)) }
}

/// Maps a store's "not found" for a job to the uniform message.
pub fn hide_job(e: MetaError, owner: &Name, project: &Name, number: u64) -> ApiError {
    hide(e, || job_not_found(owner, project, number))
}
