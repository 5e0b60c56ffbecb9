//! Environments: an owner's own and the stock ones (owner `podder`).

use podder_core::Name;
use podder_core::api::Environment;
use podder_core::env::STOCK_OWNER;

use super::SqliteStore;
use super::owners::owner_missing;
use super::rows::{self, env_select};
use crate::{EnvWrite, MetaError, Result};

fn env_missing(owner: &Name, name: &Name) -> MetaError {
    MetaError::NotFound(format!("there is no environment {owner}/{name}: see `podder env list`"))
}

pub(super) async fn put_env(s: &SqliteStore, env: &Environment, mode: EnvWrite) -> Result<Environment> {
    macro_rules! insert {
        ($conflict:literal) => {
            concat!(
                "INSERT INTO environments (owner_id, name, description, spec, stock, created_at)
                 SELECT id, $2, $3, $4, $5, $6 FROM owners WHERE name = $1
                 ON CONFLICT (owner_id, name) ",
                $conflict,
                " RETURNING id"
            )
        };
    }
    let sql = match mode {
        EnvWrite::Replace => insert!(
            "DO UPDATE SET description = excluded.description, spec = excluded.spec, stock = excluded.stock,
                           created_at = excluded.created_at"
        ),
        EnvWrite::Create | EnvWrite::IfAbsent => insert!("DO NOTHING"),
    };
    let written: Option<i64> = sqlx::query_scalar(sql)
        .bind(env.owner.as_str())
        .bind(env.name.as_str())
        .bind(&env.description)
        .bind(serde_json::to_string(&env.spec)?)
        .bind(env.stock)
        .bind(env.created_at)
        .fetch_optional(&s.writer)
        .await?;
    if written.is_none() {
        let owner: Option<i64> = sqlx::query_scalar("SELECT id FROM owners WHERE name = $1")
            .bind(env.owner.as_str())
            .fetch_optional(&s.writer)
            .await?;
        if owner.is_none() {
            return Err(owner_missing(&env.owner));
        }
        if mode == EnvWrite::Create {
            return Err(MetaError::Conflict(format!(
                "the environment {}/{} already exists: choose another name, or replace it (`podder env create --replace`)",
                env.owner, env.name
            )));
        }
    }
    let row = sqlx::query(concat!(env_select!(), "WHERE o.name = $1 AND e.name = $2"))
        .bind(env.owner.as_str())
        .bind(env.name.as_str())
        .fetch_one(&s.writer)
        .await?;
    rows::env(&row)
}

pub(super) async fn get_env(s: &SqliteStore, owner: &Name, name: &Name) -> Result<Environment> {
    let row = sqlx::query(concat!(env_select!(), "WHERE o.name = $1 AND e.name = $2"))
        .bind(owner.as_str())
        .bind(name.as_str())
        .fetch_optional(&s.reader)
        .await?;
    match row {
        Some(row) => rows::env(&row),
        None => Err(env_missing(owner, name)),
    }
}

pub(super) async fn list_envs(s: &SqliteStore, owner: &Name) -> Result<Vec<Environment>> {
    let rows =
        sqlx::query(concat!(env_select!(), "WHERE o.name = $1 OR o.name = $2 ORDER BY (o.name = $1) DESC, e.name"))
            .bind(STOCK_OWNER)
            .bind(owner.as_str())
            .fetch_all(&s.reader)
            .await?;
    rows.iter().map(rows::env).collect()
}

pub(super) async fn delete_env(s: &SqliteStore, owner: &Name, name: &Name) -> Result<()> {
    let done = sqlx::query(
        "DELETE FROM environments
         WHERE name = $2 AND owner_id = (SELECT id FROM owners WHERE name = $1)",
    )
    .bind(owner.as_str())
    .bind(name.as_str())
    .execute(&s.writer)
    .await?;
    if done.rows_affected() == 0 {
        return Err(env_missing(owner, name));
    }
    Ok(())
}
