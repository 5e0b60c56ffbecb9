//! The stages of a job around its process: materializing its code and
//! inputs, turning the lease into a [`JobPlan`] (script, variables, mounts,
//! hidden paths), judging how a run ended, and capturing `/output`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use podder_client::ClientError;
use podder_client::transfer::{NoProgress, upload_tree};
use podder_core::api::Lease;
use podder_core::{Manifest, ManifestId, MountPath, Outcome};
use podder_store::scan::{ScanOptions, scan_tree};

use crate::Shared;
use crate::cache::TreePin;
use crate::executor::{Ending, ExitStatusInfo, JobPlan, JobServer, Limits};
use crate::heartbeat::Control;
use crate::logs::LogSink;
use crate::prepare::{JobDirs, remove_tree};
use crate::retry::{is_transient, with_retry};
use crate::sandbox::build_script;
use podder_core::ExecutorKind;

/// The outcome and reason of a job that ran.
pub(crate) fn outcome_of(
    info: &ExitStatusInfo,
    control: Control,
    timeout_secs: Option<u64>,
) -> (Outcome, Option<String>) {
    match info.ending {
        Ending::TimedOut => (Outcome::Failed, Some(format!("timed out after {} s", timeout_secs.unwrap_or(0)))),
        Ending::Stopped | Ending::Killed if control == Control::Shutdown => {
            (Outcome::Failed, Some("agent shut down".into()))
        }
        Ending::Stopped | Ending::Killed => (Outcome::Stopped, None),
        Ending::Exited if info.code == 0 => (Outcome::Succeeded, None),
        Ending::Exited => (
            Outcome::Failed,
            Some(match info.signal {
                Some(sig) => format!("killed by signal {sig}"),
                None => format!("exited with code {}", info.code),
            }),
        ),
    }
}

/// What preparing a job produced: its input trees and where they appear,
/// and the pins that keep those trees in the cache until the job ends.
pub(crate) struct Prepared {
    pub inputs: Vec<(PathBuf, MountPath)>,
    pub pins: Vec<TreePin>,
}

/// [`prepare`], tried again (up to three times in all) while it fails for
/// a reason that may pass, such as the server restarting.
pub(crate) async fn prepare_retrying(
    shared: &Shared,
    lease: &Lease,
    dirs: &JobDirs,
    log: &LogSink,
) -> anyhow::Result<Prepared> {
    let mut tries = 0;
    loop {
        tries += 1;
        match prepare(shared, lease, dirs, log).await {
            Ok(inputs) => return Ok(inputs),
            Err(e) if tries < 3 && may_pass(&e) && !shared.deadline.passed() => {
                log.system(format!("preparing the job failed, trying again: {e:#}")).await;
                let root = dirs.root.clone();
                tokio::task::spawn_blocking(move || remove_tree(&root)).await??;
                tokio::time::sleep(Duration::from_secs(tries)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether an error came from a call to the server that may succeed later.
fn may_pass(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<ClientError>().is_some_and(is_transient))
}

/// Materializes the code and the inputs; returns the inputs' trees, pinned.
async fn prepare(shared: &Shared, lease: &Lease, dirs: &JobDirs, log: &LogSink) -> anyhow::Result<Prepared> {
    let (client, ws, spec) = (&shared.client, &shared.workspace, &lease.job.spec);
    std::fs::create_dir_all(&dirs.root).with_context(|| format!("cannot create {}", dirs.root.display()))?;
    ws.materialize_code(client, &spec.code, &dirs.code).await?;
    std::fs::create_dir_all(&dirs.output).with_context(|| format!("cannot create {}", dirs.output.display()))?;
    let (mut inputs, mut pins) = (Vec::new(), Vec::new());
    for input in &spec.inputs {
        let (pin, built) = ws.tree(client, &input.manifest).await?;
        let how = if built { "downloaded" } else { "cached" };
        log.system(format!("input: {} at {} ({how})", input.source, input.mount)).await;
        inputs.push((pin.path().to_path_buf(), input.mount.clone()));
        // An unsandboxed job could write the tree: it is not served again.
        if shared.config.executor == ExecutorKind::Process && !shared.sandbox.is_sandboxed() {
            pin.expose();
        }
        pins.push(pin);
    }
    Ok(Prepared { inputs, pins })
}

/// The plan that runs the leased job.
pub(crate) fn plan(
    shared: &Shared,
    lease: &Lease,
    dirs: &JobDirs,
    inputs: Vec<(PathBuf, MountPath)>,
) -> anyhow::Result<JobPlan> {
    let spec = &lease.job.spec;
    if spec.command.is_empty() {
        anyhow::bail!("the job has no command");
    }
    let mut env = vec![("PODDER_JOB".to_string(), lease.job.job_ref.to_string())];
    for (k, v) in &spec.params {
        let name: String =
            k.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
        env.push((format!("PODDER_PARAM_{name}"), v.clone()));
    }
    if let Some(url) = &lease.server_url {
        env.push(("MLFLOW_TRACKING_URI".into(), format!("{}/", url.trim_end_matches('/'))));
    }
    let mut hide = shared.config.hide_paths.clone();
    hide.push(shared.workspace.root().to_path_buf());
    let r = &spec.resources;
    let job = &lease.job.job_ref;
    let server = lease.server_url.as_ref().map(|url| JobServer {
        url: url.trim_end_matches('/').to_string(),
        routes: match &job.owner {
            Some(owner) => vec![format!("/api/v1/jobs/{owner}/{}/{}", job.project, job.number)],
            None => vec![],
        },
    });
    Ok(JobPlan {
        script: build_script(
            &crate::envs::with_job_venv(&spec.setup, &crate::envs::job_venv_dir(shared, dirs)),
            &spec.command,
        ),
        env,
        code_dir: dirs.code.clone(),
        output_dir: dirs.output.clone(),
        inputs,
        hide,
        extra_ro: Vec::new(),
        sandbox: shared.sandbox.clone(),
        timeout: spec.timeout_secs.map(Duration::from_secs),
        stop_grace: shared.config.stop_grace,
        limits: Limits { cpus: r.cpus, memory_bytes: r.memory_bytes },
        no_network: r.no_network,
        server,
    })
}

/// Scans and uploads `/output`; returns its manifest id, files and bytes.
/// With `empty_implicit` (the server takes the empty output uncommitted), an
/// empty `/output` is neither scanned nor committed: its id is known.
pub(crate) async fn upload_output(
    shared: &Shared,
    dirs: &JobDirs,
    empty_implicit: bool,
) -> anyhow::Result<(ManifestId, usize, u64)> {
    if empty_implicit && is_empty_dir(&dirs.output) {
        return Ok((Manifest::empty_id(), 0, 0));
    }
    let dir = dirs.output.clone();
    let tree = tokio::task::spawn_blocking(move || {
        scan_tree(&dir, &ScanOptions { respect_ignore: false, max_bytes: None, threads: 0 })
    })
    .await
    .context("the output scan failed")??;
    let report =
        with_retry("uploading the output", &shared.deadline, || upload_tree(&shared.client, &tree, &NoProgress))
            .await?;
    let id = report.manifest.context("the server committed no manifest for the output")?;
    Ok((id, report.files, report.bytes_total))
}

/// Whether `dir` is a directory without entries (one `getdents`).
fn is_empty_dir(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an empty `/output` would have been committed as.
    #[test]
    fn an_empty_output_scans_to_the_empty_manifest() {
        let dir = tempfile::tempdir().unwrap();
        assert!(is_empty_dir(dir.path()));
        let tree = scan_tree(dir.path(), &ScanOptions { respect_ignore: false, max_bytes: None, threads: 0 }).unwrap();
        assert_eq!(tree.manifest.id(), Manifest::empty_id());
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert!(!is_empty_dir(dir.path()));
    }
}
