//! `/manifests`: committing a manifest once every chunk it names is stored,
//! and reading one back.
//!
//! A manifest lists another owner's paths, sizes and chunk ids, so reading
//! one needs a grant (`MetaStore::grant_manifests`): committing it, a job
//! that uses it (code, inputs, output) or a dataset version of it grants it
//! to the owner concerned. Admins read every manifest. Anyone else asking
//! for a manifest they were not granted gets exactly the answer for a
//! missing one, so ids do not reveal what is stored.
//!
//! A commit body may be at most `max_manifest_bytes` and list at most
//! `max_manifest_entries` entries (413 otherwise). Committing holds the
//! garbage collector's shared lock and remembers the manifest for the grace
//! window (see `grace`), so nothing collects it before a record refers to it.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::StreamExt;
use podder_core::api::ManifestCommitted;
use podder_core::{Manifest, ManifestId};
use podder_store::StoreError;

use crate::auth::Caller;
use crate::chunks::absent;
use crate::error::{ApiError, ApiResult, Json, Path};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    // The body is read by `read_limited`, which enforces the configured limit.
    Router::new().route("/manifests", post(commit)).route("/manifests/{id}", get(show))
}

/// Stores a validated manifest whose chunks are all present, and remembers
/// it for the grace window. Idempotent. Call it under `grace.hold()`.
pub async fn store_manifest(state: &AppState, manifest: &Manifest) -> ApiResult<ManifestId> {
    let bytes = manifest.canonical_bytes();
    let id = ManifestId::of(&bytes);
    state.store.put_manifest(id, Bytes::from(bytes)).await?;
    state.grace.manifest(id);
    Ok(id)
}

/// The answer for a manifest that is missing, or that the caller may not read.
fn not_stored(id: ManifestId) -> ApiError {
    ApiError::not_found(format!("manifest {id} is not stored on this server: commit it first"))
}

async fn manifest_bytes(state: &AppState, id: ManifestId) -> ApiResult<Bytes> {
    state.store.get_manifest(id).await.map_err(|e| match e {
        StoreError::NotFound(_) => not_stored(id),
        e => e.into(),
    })
}

/// Whether the caller may read (and so build on) manifest `id`: admins
/// always, others with a grant. Says nothing about whether it is stored.
pub async fn may_read(state: &AppState, caller: &Caller, id: ManifestId) -> ApiResult<bool> {
    Ok(caller.admin || state.meta.may_read_manifest(&caller.owner, id).await?)
}

/// Reads a committed manifest.
pub async fn load_manifest(state: &AppState, id: ManifestId) -> ApiResult<Manifest> {
    let bytes = manifest_bytes(state, id).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::internal(format!("stored manifest {id} is unreadable: {e}")))
}

fn too_big(size: impl std::fmt::Display, limit: usize) -> ApiError {
    ApiError::too_large(format!(
        "the manifest is {size} bytes, more than the server's limit of {limit} bytes: \
         split the tree into several smaller ones (e.g. one dataset per part)"
    ))
}

/// Reads a request body of at most `limit` bytes.
async fn read_limited(headers: &HeaderMap, body: Body, limit: usize) -> ApiResult<Vec<u8>> {
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared
        && n > limit as u64
    {
        return Err(too_big(n, limit));
    }
    let mut buf = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    let mut stream = body.into_data_stream();
    while let Some(part) = stream.next().await {
        let part =
            part.map_err(|e| ApiError::invalid(format!("the manifest could not be read: {e}; send it again")))?;
        if buf.len() + part.len() > limit {
            return Err(too_big(format!("more than {}", buf.len() + part.len()), limit));
        }
        buf.extend_from_slice(&part);
    }
    Ok(buf)
}

async fn commit(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<ManifestCommitted>> {
    let body = read_limited(&headers, body, state.config.max_manifest_bytes).await?;
    let manifest: Manifest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("the request body is not a valid manifest: {e}")))?;
    drop(body);
    let max = state.config.max_manifest_entries;
    if manifest.entries.len() > max {
        return Err(ApiError::too_large(format!(
            "the manifest lists {} entries, more than the server's limit of {max}: \
             split the tree into several smaller ones (e.g. one dataset per part)",
            manifest.entries.len()
        )));
    }
    manifest.validate()?;
    let _hold = state.grace.hold().await;
    let missing = absent(&state.store, manifest.chunk_ids()).await?;
    if let Some(first) = missing.first() {
        return Err(ApiError::invalid(format!(
            "{} chunks are missing, e.g. {first}: upload them first",
            missing.len()
        )));
    }
    let id = store_manifest(&state, &manifest).await?;
    state.meta.grant_manifests(&caller.owner, &[id]).await?;
    Ok(Json(ManifestCommitted { id, files: manifest.file_count() as u64, bytes: manifest.total_size() }))
}

async fn show(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    let id: ManifestId = id.parse()?;
    if !may_read(&state, &caller, id).await? {
        return Err(not_stored(id));
    }
    let bytes = manifest_bytes(&state, id).await?;
    Ok(([(CONTENT_TYPE, "application/json")], bytes))
}
