//! `/projects`: the caller's projects, creating one, showing one.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use podder_core::Name;
use podder_core::api::{CreateProject, Project};

use crate::auth::{self, Caller};
use crate::error::{ApiResult, Json, Path};
use crate::state::{AppState, now_ms};

pub fn routes() -> Router<AppState> {
    Router::new().route("/projects", get(list).post(create)).route("/projects/{owner}/{project}", get(show))
}

async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<Project>>> {
    Ok(Json(state.meta.list_projects(&caller.owner).await?))
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateProject>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    let project = state.meta.create_project(&caller.owner, &req.name, &req.description, now_ms()).await?;
    Ok((StatusCode::CREATED, Json(project)))
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, name)): Path<(Name, Name)>,
) -> ApiResult<Json<Project>> {
    Ok(Json(auth::project(&state, &caller, &owner, &name).await?))
}
