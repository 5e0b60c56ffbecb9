//! Schema migrations, applied in order at open and recorded in
//! `schema_migrations`. A migration once released is never edited: add one.

use sqlx::SqlitePool;

use crate::{MetaError, Result};

/// `(version, description, SQL)`, versions strictly increasing.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial schema", include_str!("migrations/0001_init.sql")),
    (2, "datasets, job inputs, output sizes", include_str!("migrations/0002_datasets.sql")),
    (3, "manifest readers", include_str!("migrations/0003_manifest_readers.sql")),
    (4, "environments, agents, GPU placement, tasks", include_str!("migrations/0004_envs_agents_tasks.sql")),
    (5, "pipelines, versions, runs, step jobs, step cache", include_str!("migrations/0005_pipelines.sql")),
];

pub(super) async fn run(pool: &SqlitePool) -> Result<()> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY,
            description TEXT NOT NULL,
            applied_at INTEGER NOT NULL
        )",
    )
    .execute(pool)
    .await?;
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version").fetch_all(pool).await?;
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if let Some(&newest) = applied.last()
        && newest > known
    {
        return Err(MetaError::Internal(format!(
            "the database has schema version {newest}, newer than this server knows ({known}): run a newer podder"
        )));
    }
    for &(version, description, sql) in MIGRATIONS {
        if applied.contains(&version) {
            continue;
        }
        let mut tx = pool.begin().await?;
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_migrations (version, description, applied_at) VALUES ($1, $2, $3)")
            .bind(version)
            .bind(description)
            .bind(unix_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
