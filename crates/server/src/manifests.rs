//! `/manifests`: committing a manifest once every chunk it names is stored,
//! and reading one back.

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use bytes::Bytes;
use podder_core::api::ManifestCommitted;
use podder_core::{Manifest, ManifestId};
use podder_store::StoreError;

use crate::chunks::absent;
use crate::error::{ApiError, ApiResult, Json, Path};
use crate::state::AppState;

/// A manifest of a very large tree is big JSON; nothing else is this large.
const MANIFEST_LIMIT: usize = 256 * 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/manifests", post(commit).layer(DefaultBodyLimit::max(MANIFEST_LIMIT)))
        .route("/manifests/{id}", get(show))
}

/// Stores a validated manifest whose chunks are all present. Idempotent.
pub async fn store_manifest(state: &AppState, manifest: &Manifest) -> ApiResult<ManifestId> {
    let bytes = manifest.canonical_bytes();
    let id = ManifestId::of(&bytes);
    state.store.put_manifest(id, Bytes::from(bytes)).await?;
    Ok(id)
}

async fn manifest_bytes(state: &AppState, id: ManifestId) -> ApiResult<Bytes> {
    state.store.get_manifest(id).await.map_err(|e| match e {
        StoreError::NotFound(_) => {
            ApiError::not_found(format!("manifest {id} is not stored on this server: commit it first"))
        }
        e => e.into(),
    })
}

/// Reads a committed manifest.
pub async fn load_manifest(state: &AppState, id: ManifestId) -> ApiResult<Manifest> {
    let bytes = manifest_bytes(state, id).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::internal(format!("stored manifest {id} is unreadable: {e}")))
}

async fn commit(State(state): State<AppState>, Json(manifest): Json<Manifest>) -> ApiResult<Json<ManifestCommitted>> {
    manifest.validate()?;
    let missing = absent(&state.store, manifest.chunk_ids()).await?;
    if let Some(first) = missing.first() {
        return Err(ApiError::invalid(format!(
            "{} chunks are missing, e.g. {first}: upload them first",
            missing.len()
        )));
    }
    let id = store_manifest(&state, &manifest).await?;
    Ok(Json(ManifestCommitted { id, files: manifest.file_count() as u64, bytes: manifest.total_size() }))
}

async fn show(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    let id: ManifestId = id.parse()?;
    let bytes = manifest_bytes(&state, id).await?;
    Ok(([(CONTENT_TYPE, "application/json")], bytes))
}
