//! Resolving `--data` sources to concrete manifests at submit time, so a job
//! always runs on exactly the data it was submitted with.
//!
//! Each kind of [`SourceRef`] has its resolver. A dataset resolves to one
//! concrete version (`@latest` or no version: the newest at submit), and the
//! input's `source` records it as `owner/name@N`; the metadata store links
//! the job to that version when it creates the job. Call these under
//! `grace.hold()`: an output's sub-tree is stored as a manifest of its own.

use podder_core::api::Input;
use podder_core::refs::Version;
use podder_core::{DataSpec, JobRef, ManifestId, Name, SourceRef};
use podder_meta::MetaError;

use crate::auth::{self, Caller};
use crate::datasets::no_version;
use crate::error::{ApiError, ApiResult};
use crate::manifests::{load_manifest, store_manifest};
use crate::state::AppState;

/// Resolves one parsed `--data` argument to an input of the job.
pub async fn input(state: &AppState, caller: &Caller, data: &DataSpec) -> ApiResult<Input> {
    let (source, manifest) = match &data.source {
        SourceRef::Output { job, path } => output(state, caller, job, path.as_deref()).await?,
        SourceRef::Dataset { owner, name, version } => dataset(state, caller, owner.as_ref(), name, *version).await?,
    };
    Ok(Input { source, manifest, mount: data.mount.clone() })
}

/// A job's output, or a directory inside it (stored as its own manifest).
async fn output(
    state: &AppState,
    caller: &Caller,
    job: &JobRef,
    path: Option<&str>,
) -> ApiResult<(String, ManifestId)> {
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
    let id = subtree(state, out, path, &format!("the output of job {job}")).await?;
    Ok((format!("{job}/{path}"), id))
}

/// The directory `path` inside the tree `tree`, stored as a manifest of its
/// own (the same id for the same content); `what` names the tree in errors.
pub async fn subtree(state: &AppState, tree: ManifestId, path: &str, what: &str) -> ApiResult<ManifestId> {
    let full = load_manifest(state, tree).await?;
    let sub = full
        .subtree(path)
        .map_err(|_| ApiError::invalid(format!("{what} has no directory '{path}': check the path")))?;
    store_manifest(state, &sub).await
}

/// A dataset version the caller may see; foreign datasets look missing.
async fn dataset(
    state: &AppState,
    caller: &Caller,
    owner: Option<&Name>,
    name: &Name,
    version: Version,
) -> ApiResult<(String, ManifestId)> {
    let owner = owner.unwrap_or(&caller.owner);
    auth::dataset(state, caller, owner, name).await?;
    let v = state.meta.get_version(owner, name, version).await.map_err(|e| match e {
        MetaError::NotFound(_) => no_version(caller, owner, name, version),
        e => e.into(),
    })?;
    Ok((format!("{owner}/{name}@{}", v.version), v.manifest))
}
