//! Resolving `--data` sources to concrete manifests at submit time, so a job
//! always runs on exactly the data it was submitted with.
//!
//! Each kind of [`SourceRef`] has its resolver; datasets plug in here.

use podder_core::api::Input;
use podder_core::refs::Version;
use podder_core::{DataSpec, JobRef, Name, SourceRef};

use crate::auth::{self, Caller};
use crate::error::{ApiError, ApiResult};
use crate::manifests::{load_manifest, store_manifest};
use crate::state::AppState;

/// Resolves one parsed `--data` argument to an input of the job.
pub async fn input(state: &AppState, caller: &Caller, data: &DataSpec) -> ApiResult<Input> {
    let (source, manifest) = match &data.source {
        SourceRef::Output { job, path } => output(state, caller, job, path.as_deref()).await?,
        SourceRef::Dataset { owner, name, version } => dataset(caller, owner.as_ref(), name, *version)?,
    };
    Ok(Input { source, manifest, mount: data.mount.clone() })
}

/// A job's output, or a directory inside it (stored as its own manifest).
async fn output(
    state: &AppState,
    caller: &Caller,
    job: &JobRef,
    path: Option<&str>,
) -> ApiResult<(String, podder_core::ManifestId)> {
    let job = job.with_owner(&caller.owner);
    let owner = job.owner.clone().expect("with_owner sets the owner");
    let rec = auth::job(state, caller, &owner, &job.project, job.number).await?;
    let Some(out) = rec.job.output else {
        return Err(ApiError::invalid(format!(
            "job {job} has no output yet (it is {}): wait until it has finished, then submit again",
            rec.job.state
        )));
    };
    let Some(path) = path else {
        return Ok((job.to_string(), out));
    };
    let tree = load_manifest(state, out).await?;
    let sub = tree
        .subtree(path)
        .map_err(|_| ApiError::invalid(format!("the output of job {job} has no directory '{path}': check the path")))?;
    let id = store_manifest(state, &sub).await?;
    Ok((format!("{job}/{path}"), id))
}

fn dataset(
    _caller: &Caller,
    _owner: Option<&Name>,
    name: &Name,
    _version: Version,
) -> ApiResult<(String, podder_core::ManifestId)> {
    Err(ApiError::invalid(format!(
        "'{name}' names a dataset, and datasets are not supported yet: mount a job output such as mnist#12 instead"
    )))
}
