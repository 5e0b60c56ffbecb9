//! `GET /agents`: the agents as the server last saw them (their queue and
//! inventory, from their lease requests) and the GPUs their jobs hold now.
//! Any user may list them: it tells what `--gpu N` can get.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use podder_core::api::AgentInfo;

use crate::auth::Caller;
use crate::error::{ApiResult, Json};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/agents", get(list))
}

async fn list(State(state): State<AppState>, _caller: Caller) -> ApiResult<Json<Vec<AgentInfo>>> {
    Ok(Json(state.meta.list_agents().await?))
}
