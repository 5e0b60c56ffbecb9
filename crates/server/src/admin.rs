//! `/whoami` and `/admin/*`: the caller's identity and server statistics.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use podder_core::api::{Stats, WhoAmI};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Json};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/whoami", get(whoami)).route("/admin/stats", get(stats))
}

async fn whoami(caller: Caller) -> Json<WhoAmI> {
    Json(WhoAmI { owner: caller.owner, admin: caller.admin })
}

async fn stats(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Stats>> {
    if !caller.admin {
        return Err(ApiError::forbidden("only an admin may read server statistics: use an admin token"));
    }
    Ok(Json(state.counters.snapshot()))
}
