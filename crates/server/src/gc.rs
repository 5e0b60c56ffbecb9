//! `/admin/gc`: garbage collection of the object store (admin only).
//!
//! **Mark.** Every manifest a record refers to survives: each job's code
//! snapshot, inputs and output (jobs are kept forever and may be restarted),
//! and each dataset version. So does every manifest committed within
//! `gc_grace`. Every chunk a surviving manifest names survives, and so does
//! every chunk received (or reported present to a `missing` check) within
//! `gc_grace`.
//!
//! **Sweep.** Stored manifests that did not survive are deleted first, then
//! the chunks that did not survive — in that order, so a crash half-way
//! never leaves a manifest naming a deleted chunk. Then the store compacts
//! (`BlobStore::compact`: the pack store rewrites the packs that held the
//! deleted chunks; until then their space is not given back, and a restart
//! brings them back for the next collection to find). A dry run deletes
//! nothing and reports exactly what a real run would have freed at that
//! moment; `bytes_freed` is the stored size of the freed chunks.
//!
//! **Uploads in flight** are safe by the rules in `grace`: the collection
//! holds the exclusive side of the lock that every upload step and every
//! reference-creating write holds shared, and it spares what those steps
//! touched within the grace window (everything, while the server has run
//! for less than the window). A manifest that cannot be read aborts the
//! collection before anything is deleted, since its chunks are unknown.

use std::collections::HashSet;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use futures_util::{StreamExt, TryStreamExt, stream};
use podder_core::api::{GcReport, GcRequest};
use podder_core::{ChunkId, ManifestId};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Json};
use crate::manifests::load_manifest;
use crate::state::AppState;

/// At most this many freed chunk ids are listed in the report.
const FREED_LISTED: usize = 1000;
/// How many store operations run at once.
const PARALLEL: usize = 16;

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/gc", post(gc))
}

async fn gc(State(state): State<AppState>, caller: Caller, Json(req): Json<GcRequest>) -> ApiResult<Json<GcReport>> {
    if !caller.admin {
        return Err(ApiError::forbidden("only an admin may collect garbage: use an admin token"));
    }
    let report = collect(&state, req.dry_run).await?;
    tracing::info!(
        dry_run = report.dry_run,
        manifests_freed = report.manifests_freed,
        chunks_freed = report.chunks_freed,
        bytes_freed = report.bytes_freed,
        chunks_kept = report.chunks_kept,
        "garbage collection"
    );
    Ok(Json(report))
}

/// One collection: mark, then (unless `dry_run`) sweep, under the exclusive lock.
pub async fn collect(state: &AppState, dry_run: bool) -> ApiResult<GcReport> {
    let _exclusive = state.grace.exclusive().await;
    let spared = state.grace.spared();
    if spared.everything {
        tracing::warn!(
            grace = ?state.config.gc_grace,
            "the server started less than the grace window ago and cannot know what uploads are in flight: \
             nothing is freed"
        );
        let chunks_kept = state.store.list_chunks().await?.len() as u64;
        return Ok(GcReport { dry_run, chunks_kept, ..GcReport::default() });
    }

    let referenced = state.meta.referenced_manifests().await?;
    let (mut keep, mut free): (Vec<ManifestId>, Vec<ManifestId>) = (Vec::new(), Vec::new());
    for id in state.store.list_manifests().await? {
        if referenced.contains(&id) || spared.manifests.contains(&id) {
            keep.push(id);
        } else {
            free.push(id);
        }
    }

    let mut live: HashSet<ChunkId> = spared.chunks;
    let mut trees = stream::iter(keep).map(|id| load_manifest(state, id)).buffer_unordered(PARALLEL);
    while let Some(tree) = trees.next().await {
        live.extend(tree?.chunk_ids());
    }
    drop(trees);

    let stored = state.store.list_chunks().await?;
    let stored_count = stored.len();
    let doomed: Vec<ChunkId> = stored.into_iter().filter(|id| !live.contains(id)).collect();
    let sizes: Vec<u64> = stream::iter(doomed.iter().copied())
        .map(|id| async move { state.store.chunk_size(id).await })
        .buffered(PARALLEL)
        .try_collect()
        .await?;

    if !dry_run {
        stream::iter(free.iter().copied())
            .map(|id| async move { state.store.delete_manifest(id).await })
            .buffer_unordered(PARALLEL)
            .try_collect::<()>()
            .await?;
        stream::iter(doomed.iter().copied())
            .map(|id| async move { state.store.delete_chunk(id).await })
            .buffer_unordered(PARALLEL)
            .try_collect::<()>()
            .await?;
        // Deleted chunks give their space back only now (the pack store
        // rewrites the packs that hold them), and a delete that is not
        // compacted is undone by a restart. Still under the exclusive lock,
        // so no upload writes meanwhile.
        let compacted = state.store.compact().await?;
        tracing::info!(
            packs_rewritten = compacted.packs_rewritten,
            packs_written = compacted.packs_written,
            bytes_reclaimed = compacted.bytes_reclaimed,
            "object store compacted"
        );
    }
    Ok(GcReport {
        dry_run,
        manifests_freed: free.len() as u64,
        chunks_freed: doomed.len() as u64,
        bytes_freed: sizes.iter().sum(),
        chunks_kept: (stored_count - doomed.len()) as u64,
        freed: doomed.iter().take(FREED_LISTED).copied().collect(),
    })
}
