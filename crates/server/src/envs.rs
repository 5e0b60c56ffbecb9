//! `/envs`: environments, where jobs run. The stock ones (owner `podder`)
//! are seeded at every start, each only if absent, so an admin's
//! replacement survives restarts; every user sees and uses them. Anyone may
//! create their own; a foreign owner's environment answers like a missing one.
//!
//! At submit, `--env NAME` means the caller's own NAME, else the stock one;
//! `OWNER/NAME` names a stock environment or one's own (admins: anyone's).
//! The job keeps the resolved [`EnvSpec`], so changing or deleting an
//! environment never changes a job already submitted.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use podder_core::Name;
use podder_core::api::{CreateEnv, Environment};
use podder_core::env::{EnvRef, EnvSpec, ImageBuild, STOCK_OWNER};
use podder_meta::{EnvWrite, MetaError, MetaStore};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Json, Path};
use crate::state::{AppState, now_ms};

pub fn routes() -> Router<AppState> {
    Router::new().route("/envs", get(list).post(create)).route("/envs/{owner}/{name}", get(show).delete(remove))
}

fn stock_owner() -> Name {
    STOCK_OWNER.parse().expect("the stock owner is a valid name")
}

/// `(name, description, image, gpu_image, requirements)` of the stock
/// environments. An empty requirement set is a plain virtual environment.
const STOCK: &[(&str, &str, &str, Option<&str>, &str)] = &[
    ("python-3.11", "Python 3.11, nothing else installed", "python:3.11-slim", None, ""),
    ("pytorch", "PyTorch 2.5 with CUDA 12.4", "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime", None, "torch"),
    (
        "tensorflow",
        "TensorFlow 2.17 (GPU image for GPU jobs)",
        "tensorflow/tensorflow:2.17.0",
        Some("tensorflow/tensorflow:2.17.0-gpu"),
        "tensorflow",
    ),
    ("sklearn", "scikit-learn on Python 3.11", "python:3.11-slim", None, "scikit-learn"),
];

/// Creates the stock owner and each stock environment that is missing.
pub async fn seed_stock(meta: &dyn MetaStore) -> Result<(), MetaError> {
    let owner = stock_owner();
    let now = now_ms();
    meta.ensure_owner(&owner, false, now).await?;
    for &(name, description, image, gpu_image, requirements) in STOCK {
        let env = Environment {
            owner: owner.clone(),
            name: name.parse().expect("stock names are valid"),
            description: description.into(),
            spec: EnvSpec {
                name: format!("{STOCK_OWNER}/{name}"),
                image: Some(image.into()),
                gpu_image: gpu_image.map(Into::into),
                build: None,
                requirements: Some(requirements.into()),
                workdir: None,
            },
            stock: true,
            created_at: now,
        };
        meta.put_env(&env, EnvWrite::IfAbsent).await?;
    }
    Ok(())
}

/// Whether the caller may see (and use) `owner`'s environments.
fn may_see(caller: &Caller, owner: &Name) -> bool {
    owner.as_str() == STOCK_OWNER || caller.may_act_for(owner)
}

fn env_not_found(owner: &Name, name: &Name) -> ApiError {
    ApiError::not_found(format!("there is no environment {owner}/{name} that you can see: see `podder env list`"))
}

/// The environment a job names (`NAME`: the caller's own, else the stock
/// one; `OWNER/NAME`: stock or one's own), resolved for its spec.
pub async fn resolve(state: &AppState, caller: &Caller, text: &str) -> ApiResult<EnvSpec> {
    let unknown = || ApiError::invalid(format!("unknown environment '{text}': see `podder env list`"));
    let r: EnvRef = text.parse().map_err(|e: podder_core::Error| ApiError::invalid(e.to_string()))?;
    let candidates = match &r.owner {
        Some(o) if may_see(caller, o) => vec![o.clone()],
        Some(_) => vec![],
        None => vec![caller.owner.clone(), stock_owner()],
    };
    for owner in candidates {
        match state.meta.get_env(&owner, &r.name).await {
            Ok(env) => return Ok(env.spec),
            Err(MetaError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(unknown())
}

/// The line of the first COPY or ADD instruction of a Dockerfile, if any.
fn copy_or_add(dockerfile: &str) -> Option<(usize, &'static str)> {
    dockerfile.lines().enumerate().find_map(|(i, line)| {
        let word = line.split_whitespace().next()?.to_ascii_uppercase();
        match word.as_str() {
            "COPY" => Some((i + 1, "COPY")),
            "ADD" => Some((i + 1, "ADD")),
            _ => None,
        }
    })
}

/// Checks a create request and turns it into a spec.
fn spec_of(owner: &Name, req: &CreateEnv) -> ApiResult<EnvSpec> {
    let given = |s: &Option<String>| s.as_ref().map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
    let (image, gpu_image) = (given(&req.image), given(&req.gpu_image));
    // The Dockerfile's text is kept as written (it defines the build's hash).
    let dockerfile = req.dockerfile.clone().filter(|t| !t.trim().is_empty());
    if image.is_none() && dockerfile.is_none() && req.requirements.is_none() {
        return Err(ApiError::invalid(format!(
            "the environment {} names nothing to run in: give an image (--image), a Dockerfile (--dockerfile) \
             or a requirements file (--requirements)",
            req.name
        )));
    }
    if image.is_some() && dockerfile.is_some() {
        return Err(ApiError::invalid("give an image or a Dockerfile, not both: the Dockerfile's FROM names the base"));
    }
    if gpu_image.is_some() && image.is_none() {
        return Err(ApiError::invalid("a GPU image (--gpu-image) goes with an image (--image) for CPU jobs"));
    }
    for i in [&image, &gpu_image].into_iter().flatten() {
        if i.chars().any(|c| c.is_whitespace() || c.is_control()) || i.starts_with('-') {
            return Err(ApiError::invalid(format!("'{i}' is not an image name: use e.g. python:3.11-slim")));
        }
    }
    if let Some((line, word)) = dockerfile.as_deref().and_then(copy_or_add) {
        return Err(ApiError::invalid(format!(
            "the Dockerfile uses {word} (line {line}), but an environment is built without a context, so there \
             is nothing to copy: install with RUN (e.g. RUN pip install ...), or make it a task (`podder task new`)"
        )));
    }
    Ok(EnvSpec {
        name: format!("{owner}/{}", req.name),
        image,
        gpu_image,
        build: dockerfile.map(|text| ImageBuild { dockerfile: Some(text), context: None, git: None, obfuscate: false }),
        requirements: req.requirements.clone(),
        workdir: None,
    })
}

async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<Environment>>> {
    Ok(Json(state.meta.list_envs(&caller.owner).await?))
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateEnv>,
) -> ApiResult<(StatusCode, Json<Environment>)> {
    let owner = if req.stock {
        if !caller.admin {
            return Err(ApiError::forbidden(
                "only an admin may create or replace a stock environment: drop --stock to make one of your own",
            ));
        }
        stock_owner()
    } else {
        caller.owner.clone()
    };
    let spec = spec_of(&owner, &req)?;
    let env = Environment {
        stock: owner.as_str() == STOCK_OWNER,
        owner,
        name: req.name,
        description: req.description,
        spec,
        created_at: now_ms(),
    };
    let mode = if req.replace { EnvWrite::Replace } else { EnvWrite::Create };
    let stored = state.meta.put_env(&env, mode).await?;
    Ok((StatusCode::CREATED, Json(stored)))
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, name)): Path<(Name, Name)>,
) -> ApiResult<Json<Environment>> {
    if !may_see(&caller, &owner) {
        return Err(env_not_found(&owner, &name));
    }
    state.meta.get_env(&owner, &name).await.map(Json).map_err(|e| match e {
        MetaError::NotFound(_) => env_not_found(&owner, &name),
        e => e.into(),
    })
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path((owner, name)): Path<(Name, Name)>,
) -> ApiResult<StatusCode> {
    if !may_see(&caller, &owner) {
        return Err(env_not_found(&owner, &name));
    }
    if owner.as_str() == STOCK_OWNER && !caller.admin {
        return Err(ApiError::forbidden(format!(
            "only an admin may delete the stock environment {owner}/{name}: make one of your own with `podder env create`"
        )));
    }
    state.meta.delete_env(&owner, &name).await.map_err(|e| match e {
        MetaError::NotFound(_) => env_not_found(&owner, &name),
        e => e.into(),
    })?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_copy_and_add() {
        assert_eq!(copy_or_add("FROM x\nRUN pip install y\n"), None);
        assert_eq!(copy_or_add("FROM x\n  copy . /app\n"), Some((2, "COPY")));
        assert_eq!(copy_or_add("FROM x\nADD a.tgz /\n"), Some((2, "ADD")));
    }
}
