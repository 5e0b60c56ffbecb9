//! What records hold on to in the object store: an owner's usage for
//! quotas, every manifest any record refers to, for garbage collection, and
//! which owners may read a manifest (`manifest_readers`).
//!
//! Usage counts each distinct manifest among the owner's dataset versions
//! and job outputs once, at its total file bytes (a version made from an
//! output, or two versions of the same tree, cost nothing extra). Chunks
//! shared between manifests are not discounted: usage is what the owner's
//! records *describe*, the same however the store dedups them.

use std::collections::HashSet;

use futures_util::TryStreamExt;
use podder_core::api::JobSpec;
use podder_core::{ManifestId, Name};
use sqlx::{Row, SqliteConnection};

use super::SqliteStore;
use crate::{MetaError, Result};

/// The distinct manifests of an owner (`$1` = owner id) with their bytes.
macro_rules! owner_manifests {
    () => {
        "SELECT m, MAX(b) AS b FROM (
             SELECT v.manifest AS m, v.bytes AS b
             FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id
             WHERE d.owner_id = $1
             UNION ALL
             SELECT j.output AS m, COALESCE(j.output_bytes, 0) AS b
             FROM jobs j JOIN projects p ON p.id = j.project_id
             WHERE p.owner_id = $1 AND j.output IS NOT NULL
         ) AS u GROUP BY m"
    };
}

async fn usage_of(conn: &mut SqliteConnection, owner_id: i64) -> Result<u64> {
    let used: i64 = sqlx::query_scalar(concat!("SELECT COALESCE(SUM(b), 0) FROM (", owner_manifests!(), ") AS t"))
        .bind(owner_id)
        .fetch_one(conn)
        .await?;
    Ok(used.max(0) as u64)
}

/// Refuses with `Quota` when adding `manifest` of `bytes` would take the
/// owner past `quota`. A manifest the owner already holds adds nothing.
pub(super) async fn check_quota(
    conn: &mut SqliteConnection,
    owner_id: i64,
    owner: &Name,
    manifest: &str,
    bytes: u64,
    quota: u64,
) -> Result<()> {
    let held: Option<i64> = sqlx::query_scalar(concat!("SELECT 1 FROM (", owner_manifests!(), ") AS t WHERE m = $2"))
        .bind(owner_id)
        .bind(manifest)
        .fetch_optional(&mut *conn)
        .await?;
    if held.is_some() || bytes == 0 {
        return Ok(());
    }
    let used = usage_of(conn, owner_id).await?;
    if used.saturating_add(bytes) > quota {
        return Err(MetaError::quota_exceeded(owner, quota, used, bytes));
    }
    Ok(())
}

pub(super) async fn usage(s: &SqliteStore, owner: &Name) -> Result<u64> {
    let mut conn = s.reader.acquire().await?;
    let id: Option<i64> = sqlx::query_scalar("SELECT id FROM owners WHERE name = $1")
        .bind(owner.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    match id {
        Some(id) => usage_of(&mut conn, id).await,
        None => Ok(0),
    }
}

fn manifest_id(s: &str) -> Result<ManifestId> {
    s.parse().map_err(|e| MetaError::Internal(format!("stored manifest id is unreadable: {e}")))
}

pub(super) async fn referenced_manifests(s: &SqliteStore) -> Result<HashSet<ManifestId>> {
    let mut conn = s.reader.acquire().await?;
    // One read transaction: a consistent snapshot of every record.
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let mut out = HashSet::new();
    {
        // The spec is the authority for a job's code and inputs (older jobs
        // have no job_inputs rows); it is read row by row, not all at once.
        let mut jobs = sqlx::query("SELECT spec, output FROM jobs").fetch(&mut *tx);
        while let Some(row) = jobs.try_next().await? {
            let spec: String = row.try_get("spec")?;
            let spec: JobSpec = serde_json::from_str(&spec)?;
            out.insert(spec.code);
            out.extend(spec.inputs.iter().map(|i| i.manifest));
            if let Some(o) = row.try_get::<Option<String>, _>("output")? {
                out.insert(manifest_id(&o)?);
            }
        }
    }
    let versions: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT manifest FROM dataset_versions").fetch_all(&mut *tx).await?;
    for v in versions {
        out.insert(manifest_id(&v)?);
    }
    // The code an applied pipeline's inline steps run on.
    let codes: Vec<String> = sqlx::query_scalar("SELECT DISTINCT code FROM pipeline_versions WHERE code IS NOT NULL")
        .fetch_all(&mut *tx)
        .await?;
    for c in codes {
        out.insert(manifest_id(&c)?);
    }
    tx.commit().await?;
    Ok(out)
}

pub(super) async fn grant_manifests(s: &SqliteStore, owner: &Name, manifests: &[ManifestId]) -> Result<()> {
    let mut tx = s.writer.begin().await?;
    let owner_id: Option<i64> = sqlx::query_scalar("SELECT id FROM owners WHERE name = $1")
        .bind(owner.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    let Some(owner_id) = owner_id else {
        return Err(super::owners::owner_missing(owner));
    };
    for m in manifests {
        sqlx::query("INSERT INTO manifest_readers (manifest, owner_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(m.to_hex())
            .bind(owner_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn may_read_manifest(s: &SqliteStore, owner: &Name, manifest: ManifestId) -> Result<bool> {
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM manifest_readers r JOIN owners o ON o.id = r.owner_id WHERE r.manifest = $1 AND o.name = $2",
    )
    .bind(manifest.to_hex())
    .bind(owner.as_str())
    .fetch_optional(&s.reader)
    .await?;
    Ok(found.is_some())
}
