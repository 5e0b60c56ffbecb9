//! Datasets and their versions: creating, reading, numbering, deleting.
//!
//! A version number is allocated by bumping `datasets.next_version` in the
//! transaction that inserts the version, so concurrent creates get distinct
//! numbers and a number is never handed out twice. Deleting checks, in the
//! same transaction, that no active job mounts what goes (`job_inputs`).

use podder_core::api::{Dataset, DatasetVersion};
use podder_core::refs::Version;
use podder_core::{JobState, Name};
use sqlx::{Row, SqliteConnection};

use super::SqliteStore;
use super::rows::{self, dataset_select, version_select};
use super::storage;
use crate::{MetaError, NewVersion, Result};

fn dataset_missing(owner: &Name, name: &Name) -> MetaError {
    MetaError::NotFound(format!("there is no dataset {owner}/{name}: list your datasets with `podder data list`"))
}

/// The message for a version that does not exist (`None`: there is none at all).
pub fn version_missing(owner: &Name, name: &Name, version: Option<u32>) -> MetaError {
    MetaError::NotFound(match version {
        Some(n) => format!("dataset {owner}/{name} has no version {n}; see `podder data versions {name}`"),
        None => format!("dataset {owner}/{name} has no versions yet: upload one with `podder data upload {name} DIR`"),
    })
}

async fn dataset_id(conn: &mut SqliteConnection, owner: &Name, name: &Name) -> Result<i64> {
    let id: Option<i64> = sqlx::query_scalar(
        "SELECT d.id FROM datasets d JOIN owners o ON o.id = d.owner_id WHERE o.name = $1 AND d.name = $2",
    )
    .bind(owner.as_str())
    .bind(name.as_str())
    .fetch_optional(conn)
    .await?;
    id.ok_or_else(|| dataset_missing(owner, name))
}

/// Refuses when an active job mounts a version of the dataset (only
/// `version`, when given): the conflict names the first such job.
async fn refuse_if_mounted(
    conn: &mut SqliteConnection,
    owner: &Name,
    name: &Name,
    dataset_id: i64,
    version: Option<u32>,
) -> Result<()> {
    let row = sqlx::query(
        "SELECT v.version, o.name AS owner, p.name AS project, j.number, j.state
         FROM job_inputs ji
         JOIN dataset_versions v ON v.id = ji.dataset_version_id
         JOIN jobs j ON j.id = ji.job_id
         JOIN projects p ON p.id = j.project_id
         JOIN owners o ON o.id = p.owner_id
         WHERE v.dataset_id = $1 AND v.version = COALESCE($2, v.version)
           AND j.state IN ('queued', 'assigned', 'preparing', 'running')
         ORDER BY j.id LIMIT 1",
    )
    .bind(dataset_id)
    .bind(version.map(i64::from))
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else { return Ok(()) };
    let v: i64 = row.try_get("version")?;
    let job_owner: String = row.try_get("owner")?;
    let project: String = row.try_get("project")?;
    let number: i64 = row.try_get("number")?;
    let state: String = row.try_get("state")?;
    let state: JobState = state.parse()?;
    Err(MetaError::Conflict(format!(
        "{owner}/{name}@{v} is mounted by {job_owner}/{project}#{number}, which is {state}: stop it or wait"
    )))
}

pub(super) async fn create_dataset(
    s: &SqliteStore,
    owner: &Name,
    name: &Name,
    description: &str,
    now: i64,
) -> Result<Dataset> {
    super::owners::insert_owned(
        s,
        "INSERT INTO datasets (owner_id, name, description, next_version, created_at)
         SELECT id, $2, $3, 1, $4 FROM owners WHERE name = $1
         ON CONFLICT (owner_id, name) DO NOTHING
         RETURNING id",
        (owner, name, description, now),
        || format!("dataset {owner}/{name} already exists: upload a new version to it, or choose another name"),
    )
    .await?;
    Ok(Dataset {
        owner: owner.clone(),
        name: name.clone(),
        description: description.to_string(),
        created_at: now,
        versions: 0,
        latest: None,
        bytes: 0,
    })
}

pub(super) async fn get_dataset(s: &SqliteStore, owner: &Name, name: &Name) -> Result<Dataset> {
    let row = sqlx::query(concat!(dataset_select!(), "WHERE o.name = $1 AND d.name = $2"))
        .bind(owner.as_str())
        .bind(name.as_str())
        .fetch_optional(&s.reader)
        .await?;
    match row {
        Some(row) => rows::dataset(&row),
        None => Err(dataset_missing(owner, name)),
    }
}

pub(super) async fn list_datasets(s: &SqliteStore, owner: &Name) -> Result<Vec<Dataset>> {
    let rows = sqlx::query(concat!(dataset_select!(), "WHERE o.name = $1 ORDER BY d.name"))
        .bind(owner.as_str())
        .fetch_all(&s.reader)
        .await?;
    rows.iter().map(rows::dataset).collect()
}

pub(super) async fn delete_dataset(s: &SqliteStore, owner: &Name, name: &Name) -> Result<()> {
    let mut tx = s.writer.begin().await?;
    let id = dataset_id(&mut tx, owner, name).await?;
    refuse_if_mounted(&mut tx, owner, name, id, None).await?;
    // Versions go first rather than by cascade, so the order is explicit.
    sqlx::query("DELETE FROM dataset_versions WHERE dataset_id = $1").bind(id).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM datasets WHERE id = $1").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn create_version(s: &SqliteStore, new: NewVersion) -> Result<DatasetVersion> {
    let mut tx = s.writer.begin().await?;
    // Bumping the counter first takes the dataset's row lock (PostgreSQL)
    // before the quota is summed; SQLite's one writer serializes anyway.
    // PostgreSQL must also lock the owner's row (SELECT ... FOR UPDATE)
    // before summing, or two versions of different datasets could both pass.
    let row = sqlx::query(
        "UPDATE datasets SET next_version = next_version + 1
         WHERE id = (SELECT d.id FROM datasets d JOIN owners o ON o.id = d.owner_id
                     WHERE o.name = $1 AND d.name = $2)
         RETURNING id, owner_id, next_version",
    )
    .bind(new.owner.as_str())
    .bind(new.dataset.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Err(dataset_missing(&new.owner, &new.dataset));
    };
    let dataset_id: i64 = row.try_get("id")?;
    let owner_id: i64 = row.try_get("owner_id")?;
    let number: i64 = row.try_get::<i64, _>("next_version")? - 1;
    if number > i64::from(u32::MAX) {
        return Err(MetaError::Conflict(format!(
            "dataset {}/{} has run out of version numbers",
            new.owner, new.dataset
        )));
    }
    if let Some(quota) = new.quota {
        storage::check_quota(&mut tx, owner_id, &new.owner, &new.manifest.to_hex(), new.bytes, quota).await?;
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO dataset_versions (dataset_id, version, manifest, files, bytes, message, source, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         RETURNING id",
    )
    .bind(dataset_id)
    .bind(number)
    .bind(new.manifest.to_hex())
    .bind(new.files as i64)
    .bind(new.bytes as i64)
    .bind(&new.message)
    .bind(&new.source)
    .bind(new.now)
    .fetch_one(&mut *tx)
    .await?;
    let row = sqlx::query(concat!(version_select!(), "WHERE v.id = $1")).bind(id).fetch_one(&mut *tx).await?;
    let version = rows::version(&row)?;
    tx.commit().await?;
    Ok(version)
}

pub(super) async fn list_versions(s: &SqliteStore, owner: &Name, name: &Name) -> Result<Vec<DatasetVersion>> {
    let mut conn = s.reader.acquire().await?;
    // Read in one transaction, so "no such dataset" and "no versions" agree.
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let id = dataset_id(&mut tx, owner, name).await?;
    let rows = sqlx::query(concat!(version_select!(), "WHERE v.dataset_id = $1 ORDER BY v.version"))
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    rows.iter().map(rows::version).collect()
}

pub(super) async fn get_version(
    s: &SqliteStore,
    owner: &Name,
    name: &Name,
    version: Version,
) -> Result<DatasetVersion> {
    let mut conn = s.reader.acquire().await?;
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let id = dataset_id(&mut tx, owner, name).await?;
    let row = match version {
        Version::Number(n) => {
            sqlx::query(concat!(version_select!(), "WHERE v.dataset_id = $1 AND v.version = $2"))
                .bind(id)
                .bind(i64::from(n))
                .fetch_optional(&mut *tx)
                .await?
        }
        Version::Latest => {
            sqlx::query(concat!(version_select!(), "WHERE v.dataset_id = $1 ORDER BY v.version DESC LIMIT 1"))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
        }
    };
    tx.commit().await?;
    match row {
        Some(row) => rows::version(&row),
        None => Err(version_missing(
            owner,
            name,
            match version {
                Version::Number(n) => Some(n),
                Version::Latest => None,
            },
        )),
    }
}

pub(super) async fn delete_version(s: &SqliteStore, owner: &Name, name: &Name, version: u32) -> Result<()> {
    let mut tx = s.writer.begin().await?;
    let id = dataset_id(&mut tx, owner, name).await?;
    let deleted = {
        refuse_if_mounted(&mut tx, owner, name, id, Some(version)).await?;
        sqlx::query("DELETE FROM dataset_versions WHERE dataset_id = $1 AND version = $2")
            .bind(id)
            .bind(i64::from(version))
            .execute(&mut *tx)
            .await?
    };
    if deleted.rows_affected() == 0 {
        return Err(version_missing(owner, name, Some(version)));
    }
    tx.commit().await?;
    Ok(())
}
