//! `/datasets`: named, versioned, immutable trees. A version is a committed
//! manifest (uploaded, or a job's output taken over without moving a byte),
//! numbered 1, 2, … per dataset by the metadata store.
//!
//! Callers see and change only their own datasets (admins: every one); a
//! foreign dataset answers exactly like a missing one. A version mounted by
//! a queued or running job cannot be deleted, nor can its dataset. Creating
//! a version holds the garbage collector's shared lock (see `grace`) and is
//! checked against the owner's storage quota.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use podder_core::api::{CreateDataset, CreateVersion, Dataset, DatasetVersion, FromOutput};
use podder_core::refs::Version;
use podder_core::{ManifestId, Name};
use podder_meta::{MetaError, NewVersion};

use crate::auth::{self, Caller};
use crate::error::{ApiError, ApiResult, Json, Path};
use crate::manifests::{load_manifest, may_read};
use crate::state::{AppState, now_ms};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/datasets", get(list).post(create))
        .route("/datasets/{owner}/{name}", get(show).delete(remove))
        .route("/datasets/{owner}/{name}/versions", get(versions).post(create_version))
        .route("/datasets/{owner}/{name}/versions/{version}", get(show_version).delete(delete_version))
        .route("/datasets/{owner}/{name}/from-output", post(from_output))
}

/// How the CLI names a dataset: `name` for one's own, `owner/name` otherwise.
fn cli_name(caller: &Caller, owner: &Name, name: &Name) -> String {
    if &caller.owner == owner { name.to_string() } else { format!("{owner}/{name}") }
}

/// The answer for a version that does not exist, with how to list them.
pub fn no_version(caller: &Caller, owner: &Name, name: &Name, version: Version) -> ApiError {
    let cli = cli_name(caller, owner, name);
    ApiError::not_found(match version {
        Version::Number(n) => format!("dataset {owner}/{name} has no version {n}; see `podder data versions {cli}`"),
        Version::Latest => {
            format!("dataset {owner}/{name} has no versions yet: upload one with `podder data upload {cli} DIR`")
        }
    })
}

/// A version in a URL: `3`, `v3` or `latest`.
fn parse_version(s: &str) -> ApiResult<Version> {
    if s == "latest" {
        return Ok(Version::Latest);
    }
    let digits = s.strip_prefix('v').unwrap_or(s);
    match digits.parse::<u32>() {
        Ok(n) if n > 0 && digits.bytes().all(|b| b.is_ascii_digit()) => Ok(Version::Number(n)),
        _ => {
            Err(ApiError::invalid(format!("'{s}' is not a dataset version: use a number such as 3, or v3, or latest")))
        }
    }
}

async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<Dataset>>> {
    Ok(Json(state.meta.list_datasets(&caller.owner).await?))
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateDataset>,
) -> ApiResult<(StatusCode, Json<Dataset>)> {
    let dataset = state.meta.create_dataset(&caller.owner, &req.name, &req.description, now_ms()).await?;
    Ok((StatusCode::CREATED, Json(dataset)))
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, name)): Path<(Name, Name)>,
) -> ApiResult<Json<Dataset>> {
    Ok(Json(auth::dataset(&state, &caller, &owner, &name).await?))
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, name)): Path<(Name, Name)>,
) -> ApiResult<StatusCode> {
    auth::dataset(&state, &caller, &owner, &name).await?;
    state.meta.delete_dataset(&owner, &name).await.map_err(|e| auth::hide_dataset(e, &owner, &name))?;
    tracing::info!(dataset = %format!("{owner}/{name}"), "dataset deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn versions(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, name)): Path<(Name, Name)>,
) -> ApiResult<Json<Vec<DatasetVersion>>> {
    auth::dataset(&state, &caller, &owner, &name).await?;
    Ok(Json(state.meta.list_versions(&owner, &name).await.map_err(|e| auth::hide_dataset(e, &owner, &name))?))
}

/// Adds a committed manifest as the dataset's next version, and lets the
/// dataset's owner read it. Call it under `grace.hold()`, after checking
/// that the manifest is committed and that the caller may read it.
async fn add_version(
    state: &AppState,
    owner: &Name,
    name: &Name,
    manifest: ManifestId,
    message: Option<String>,
    source: Option<String>,
) -> ApiResult<DatasetVersion> {
    let tree = load_manifest(state, manifest).await?;
    let new = NewVersion {
        owner: owner.clone(),
        dataset: name.clone(),
        manifest,
        files: tree.file_count() as u64,
        bytes: tree.total_size(),
        message,
        source,
        quota: state.config.quota_bytes,
        now: now_ms(),
    };
    state.meta.grant_manifests(owner, &[manifest]).await?;
    let version = state.meta.create_version(new).await.map_err(|e| auth::hide_dataset(e, owner, name))?;
    tracing::info!(dataset = %format!("{owner}/{name}@{}", version.version), "dataset version created");
    Ok(version)
}

async fn create_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, name)): Path<(Name, Name)>,
    Json(req): Json<CreateVersion>,
) -> ApiResult<(StatusCode, Json<DatasetVersion>)> {
    auth::dataset(&state, &caller, &owner, &name).await?;
    let _hold = state.grace.hold().await;
    // A manifest the caller was not granted looks uncommitted, so naming
    // another owner's manifest id does not make it this dataset's.
    if !may_read(&state, &caller, req.manifest).await? || !state.store.has_manifest(req.manifest).await? {
        return Err(ApiError::invalid(format!(
            "manifest {} is not committed on this server: upload its chunks and commit it first",
            req.manifest
        )));
    }
    let version = add_version(&state, &owner, &name, req.manifest, req.message, None).await?;
    Ok((StatusCode::CREATED, Json(version)))
}

async fn show_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, name, version)): Path<(Name, Name, String)>,
) -> ApiResult<Json<DatasetVersion>> {
    let version = parse_version(&version)?;
    auth::dataset(&state, &caller, &owner, &name).await?;
    state.meta.get_version(&owner, &name, version).await.map(Json).map_err(|e| match e {
        MetaError::NotFound(_) => no_version(&caller, &owner, &name, version),
        e => e.into(),
    })
}

async fn delete_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, name, version)): Path<(Name, Name, String)>,
) -> ApiResult<StatusCode> {
    let Version::Number(n) = parse_version(&version)? else {
        return Err(ApiError::invalid("name the version to delete by its number, e.g. 3: `latest` moves"));
    };
    auth::dataset(&state, &caller, &owner, &name).await?;
    state.meta.delete_version(&owner, &name, n).await.map_err(|e| match e {
        MetaError::NotFound(_) => no_version(&caller, &owner, &name, Version::Number(n)),
        e => e.into(),
    })?;
    tracing::info!(dataset = %format!("{owner}/{name}@{n}"), "dataset version deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn from_output(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, name)): Path<(Name, Name)>,
    Json(req): Json<FromOutput>,
) -> ApiResult<(StatusCode, Json<DatasetVersion>)> {
    auth::dataset(&state, &caller, &owner, &name).await?;
    let job = req.job.with_owner(&caller.owner);
    let job_owner = job.owner.clone().expect("with_owner sets the owner");
    let rec = auth::job(&state, &caller, &job_owner, &job.project, job.number).await?;
    let (job_ref, job_state) = (&rec.job.job_ref, rec.job.state);
    if !job_state.is_terminal() {
        return Err(ApiError::invalid(format!(
            "job {job_ref} is {job_state}: only an ended job's output can become a version; wait until it ends"
        )));
    }
    let Some(output) = rec.job.output else {
        return Err(ApiError::invalid(format!(
            "job {job_ref} ended ({job_state}) without an output: there is nothing to make a version of"
        )));
    };
    let _hold = state.grace.hold().await;
    let version = add_version(&state, &owner, &name, output, req.message, Some(job_ref.to_string())).await?;
    Ok((StatusCode::CREATED, Json(version)))
}
