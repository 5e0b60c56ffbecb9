//! Log lines of jobs: idempotent appends by sequence number, ordered reads.

use podder_core::api::LogLine;
use sqlx::Row;

use super::SqliteStore;
use super::rows;
use crate::{JobId, MetaError, Result};

pub(super) async fn append_logs(s: &SqliteStore, lease_id: &str, lines: &[LogLine]) -> Result<JobId> {
    let mut tx = s.writer.begin().await?;
    let row = sqlx::query(
        "SELECT id, log_base FROM jobs WHERE lease_id = $1 AND state IN ('assigned', 'preparing', 'running')",
    )
    .bind(lease_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Err(MetaError::lease_gone(lease_id));
    };
    let id: i64 = row.try_get("id")?;
    let base: i64 = row.try_get("log_base")?;
    for line in lines {
        let seq = i64::try_from(line.seq)
            .ok()
            .and_then(|s| s.checked_add(base))
            .ok_or_else(|| MetaError::Invalid(format!("log line seq {} is too large", line.seq)))?;
        sqlx::query(
            "INSERT INTO log_lines (job_id, seq, ts, stream, text) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (job_id, seq) DO NOTHING",
        )
        .bind(id)
        .bind(seq)
        .bind(line.ts)
        .bind(rows::stream_name(line.stream))
        .bind(&line.text)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(JobId(id))
}

pub(super) async fn read_logs(s: &SqliteStore, job: JobId, from: u64, limit: u32) -> Result<Vec<LogLine>> {
    let from = i64::try_from(from).unwrap_or(i64::MAX);
    let rows = sqlx::query(
        "SELECT seq, ts, stream, text FROM log_lines WHERE job_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
    )
    .bind(job.0)
    .bind(from)
    .bind(i64::from(limit))
    .fetch_all(&s.reader)
    .await?;
    rows.iter().map(rows::log_line).collect()
}
