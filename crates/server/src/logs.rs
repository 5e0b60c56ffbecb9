//! Reading a job's log lines, with a long-poll that new lines and state
//! changes wake.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use podder_core::api::LogBatch;
use podder_core::{JobState, Name};
use podder_meta::JobId;
use serde::Deserialize;

use crate::auth::{self, Caller};
use crate::error::{ApiResult, Json, Path, Query};
use crate::state::AppState;
use crate::wait::wait_for;

/// The most lines in one answer.
const BATCH_MAX: u32 = 5000;
/// The longest a follower waits for news in one request.
const WAIT_MAX_MS: u64 = 60_000;

pub fn routes() -> Router<AppState> {
    Router::new().route("/jobs/{owner}/{project}/{n}/logs", get(read))
}

#[derive(Deserialize)]
struct LogQuery {
    /// The first seq wanted.
    from: Option<u64>,
    /// The last seq already seen (`from = after + 1`); `from` wins.
    after: Option<u64>,
    #[serde(default)]
    wait_ms: u64,
    limit: Option<u32>,
}

/// The lines from `from` on and whether the follower is done. `ready` is
/// false when there is nothing new to tell: no line and no state change.
async fn batch(state: &AppState, id: JobId, from: u64, limit: u32, seen: JobState) -> ApiResult<(LogBatch, bool)> {
    // The state is read first: once it is final, every line is stored.
    let job_state = state.meta.get_job_by_id(id).await?.job.state;
    let mut lines = state.meta.read_logs(id, from, limit + 1).await?;
    let more = lines.len() > limit as usize;
    lines.truncate(limit as usize);
    let done = job_state.is_terminal() && !more;
    let ready = !lines.is_empty() || job_state.is_terminal() || job_state != seen;
    Ok((LogBatch { lines, done, state: job_state }, ready))
}

async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, project, n)): Path<(Name, Name, u64)>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Json<LogBatch>> {
    let rec = auth::job(&state, &caller, &owner, &project, n).await?;
    let from = q.from.or(q.after.map(|a| a.saturating_add(1))).unwrap_or(0);
    let limit = q.limit.unwrap_or(BATCH_MAX).clamp(1, BATCH_MAX);
    let seen = rec.job.state;
    let notify = state.job_events.subscribe(&rec.id);
    let deadline = state.deadline(q.wait_ms, WAIT_MAX_MS);
    let waited = wait_for(&notify, deadline, &state.shutdown_signal(), || async {
        let (b, ready) = batch(&state, rec.id, from, limit, seen).await?;
        Ok::<_, crate::error::ApiError>((ready || q.wait_ms == 0).then_some(b))
    })
    .await?;
    match waited {
        Some(b) => Ok(Json(b)),
        None => Ok(Json(batch(&state, rec.id, from, limit, seen).await?.0)),
    }
}
