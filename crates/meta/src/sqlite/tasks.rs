//! Deployed tasks: one row per project and name, its version bumped by
//! every deploy.

use podder_core::Name;
use podder_core::api::Task;

use super::SqliteStore;
use super::rows::{self, task_select};
use crate::{MetaError, NewTask, Result};

fn task_missing(owner: &Name, project: &Name, name: &Name) -> MetaError {
    MetaError::NotFound(format!(
        "there is no task {name} in {owner}/{project}: deploy it with `podder task deploy`, see `podder task list`"
    ))
}

pub(super) async fn deploy_task(s: &SqliteStore, new: NewTask) -> Result<Task> {
    let mut tx = s.writer.begin().await?;
    let project_id: Option<i64> = sqlx::query_scalar(
        "SELECT p.id FROM projects p JOIN owners o ON o.id = p.owner_id WHERE o.name = $1 AND p.name = $2",
    )
    .bind(new.owner.as_str())
    .bind(new.project.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(project_id) = project_id else {
        return Err(MetaError::NotFound(format!(
            "there is no project {}/{}: create it with `podder init {}`",
            new.owner, new.project, new.project
        )));
    };
    sqlx::query(
        "INSERT INTO tasks (project_id, name, version, spec, environment, build_job, git_commit, obfuscated,
                            deployed_at)
         VALUES ($1, $2, 1, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (project_id, name) DO UPDATE SET
             version = tasks.version + 1, spec = excluded.spec, environment = excluded.environment,
             build_job = excluded.build_job, git_commit = excluded.git_commit,
             obfuscated = excluded.obfuscated, deployed_at = excluded.deployed_at",
    )
    .bind(project_id)
    .bind(new.spec.name.as_str())
    .bind(serde_json::to_string(&new.spec)?)
    .bind(serde_json::to_string(&new.environment)?)
    .bind(new.build_job as i64)
    .bind(&new.commit)
    .bind(new.obfuscated)
    .bind(new.now)
    .execute(&mut *tx)
    .await?;
    let row = sqlx::query(concat!(task_select!(), "WHERE t.project_id = $1 AND t.name = $2"))
        .bind(project_id)
        .bind(new.spec.name.as_str())
        .fetch_one(&mut *tx)
        .await?;
    let task = rows::task(&row)?;
    tx.commit().await?;
    Ok(task)
}

pub(super) async fn get_task(s: &SqliteStore, owner: &Name, project: &Name, name: &Name) -> Result<Task> {
    let row = sqlx::query(concat!(task_select!(), "WHERE o.name = $1 AND p.name = $2 AND t.name = $3"))
        .bind(owner.as_str())
        .bind(project.as_str())
        .bind(name.as_str())
        .fetch_optional(&s.reader)
        .await?;
    match row {
        Some(row) => rows::task(&row),
        None => Err(task_missing(owner, project, name)),
    }
}

pub(super) async fn list_tasks(s: &SqliteStore, owner: &Name, project: &Name) -> Result<Vec<Task>> {
    let rows = sqlx::query(concat!(task_select!(), "WHERE o.name = $1 AND p.name = $2 ORDER BY t.name"))
        .bind(owner.as_str())
        .bind(project.as_str())
        .fetch_all(&s.reader)
        .await?;
    rows.iter().map(rows::task).collect()
}
