//! Owners, their tokens and their projects.

use podder_core::Name;
use podder_core::api::Project;
use sqlx::Row;

use super::SqliteStore;
use super::rows::{self, project_select};
use crate::{MetaError, Owner, Result, TokenHash};

pub(super) fn owner_missing(owner: &Name) -> MetaError {
    MetaError::NotFound(format!("there is no owner '{owner}': create a token for it first"))
}

pub(super) async fn ensure_owner(s: &SqliteStore, name: &Name, admin: bool, now: i64) -> Result<Owner> {
    let row = sqlx::query(
        "INSERT INTO owners (name, admin, created_at) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET admin = (owners.admin OR excluded.admin)
         RETURNING admin",
    )
    .bind(name.as_str())
    .bind(admin)
    .bind(now)
    .fetch_one(&s.writer)
    .await?;
    Ok(Owner { name: name.clone(), admin: row.try_get("admin")? })
}

pub(super) async fn has_admin(s: &SqliteStore) -> Result<bool> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM owners WHERE admin = TRUE").fetch_one(&s.reader).await?;
    Ok(n > 0)
}

pub(super) async fn add_token(s: &SqliteStore, owner: &Name, hash: &TokenHash, now: i64) -> Result<()> {
    let done = sqlx::query(
        "INSERT INTO tokens (hash, owner_id, created_at) SELECT $1, id, $3 FROM owners WHERE name = $2
         ON CONFLICT (hash) DO NOTHING",
    )
    .bind(hash.as_str())
    .bind(owner.as_str())
    .bind(now)
    .execute(&s.writer)
    .await?;
    if done.rows_affected() == 0 {
        // Either the owner is missing or the hash is already known; only
        // the first is an error (tokens are random, so the second is a retry).
        let known: Option<i64> = sqlx::query_scalar("SELECT id FROM owners WHERE name = $1")
            .bind(owner.as_str())
            .fetch_optional(&s.writer)
            .await?;
        if known.is_none() {
            return Err(owner_missing(owner));
        }
    }
    Ok(())
}

pub(super) async fn owner_by_token(s: &SqliteStore, hash: &TokenHash) -> Result<Option<Owner>> {
    let row = sqlx::query("SELECT o.name, o.admin FROM tokens t JOIN owners o ON o.id = t.owner_id WHERE t.hash = $1")
        .bind(hash.as_str())
        .fetch_optional(&s.reader)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let name: String = row.try_get("name")?;
    let name = name.parse().map_err(|e| MetaError::Internal(format!("stored owner name is unreadable: {e}")))?;
    Ok(Some(Owner { name, admin: row.try_get("admin")? }))
}

/// Runs an `INSERT ... SELECT id, $2, $3, .., $4 FROM owners WHERE name = $1
/// ON CONFLICT DO NOTHING RETURNING id` for something an owner names (a
/// project, a dataset); tells a missing owner from a taken name.
pub(super) async fn insert_owned(
    s: &SqliteStore,
    sql: &'static str,
    (owner, name, description, now): (&Name, &Name, &str, i64),
    conflict: impl FnOnce() -> String,
) -> Result<i64> {
    let created: Option<i64> = sqlx::query_scalar(sql)
        .bind(owner.as_str())
        .bind(name.as_str())
        .bind(description)
        .bind(now)
        .fetch_optional(&s.writer)
        .await?;
    if let Some(id) = created {
        return Ok(id);
    }
    let known: Option<i64> = sqlx::query_scalar("SELECT id FROM owners WHERE name = $1")
        .bind(owner.as_str())
        .fetch_optional(&s.writer)
        .await?;
    Err(match known {
        None => owner_missing(owner),
        Some(_) => MetaError::Conflict(conflict()),
    })
}

pub(super) async fn create_project(
    s: &SqliteStore,
    owner: &Name,
    name: &Name,
    description: &str,
    now: i64,
) -> Result<Project> {
    insert_owned(
        s,
        "INSERT INTO projects (owner_id, name, description, last_job, created_at)
         SELECT id, $2, $3, 0, $4 FROM owners WHERE name = $1
         ON CONFLICT (owner_id, name) DO NOTHING
         RETURNING id",
        (owner, name, description, now),
        || format!("the project {owner}/{name} already exists: use it, or choose another name"),
    )
    .await?;
    Ok(Project {
        owner: owner.clone(),
        name: name.clone(),
        description: description.to_string(),
        created_at: now,
        jobs: 0,
    })
}

pub(super) async fn get_project(s: &SqliteStore, owner: &Name, name: &Name) -> Result<Project> {
    let row = sqlx::query(concat!(project_select!(), "WHERE o.name = $1 AND p.name = $2"))
        .bind(owner.as_str())
        .bind(name.as_str())
        .fetch_optional(&s.reader)
        .await?;
    match row {
        Some(row) => rows::project(&row),
        None => Err(MetaError::NotFound(format!(
            "there is no project {owner}/{name}: check the name, or create it with `podder init {name}`"
        ))),
    }
}

pub(super) async fn list_projects(s: &SqliteStore, owner: &Name) -> Result<Vec<Project>> {
    let rows = sqlx::query(concat!(project_select!(), "WHERE o.name = $1 ORDER BY p.name"))
        .bind(owner.as_str())
        .fetch_all(&s.reader)
        .await?;
    rows.iter().map(rows::project).collect()
}
