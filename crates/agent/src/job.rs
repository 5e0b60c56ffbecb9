//! One lease from start to end: report `preparing`, materialize the code
//! and inputs, report `running`, run the process, capture `/output`, ship
//! the log, `finish`, and remove the job's directory.
//!
//! A stop from the server, the agent's shutdown, or a lost lease may arrive
//! at any point (see [`Control`]); a lost lease ends the job without any
//! further report, anything else still ends with `finish`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use podder_core::api::{Finish, FinishWithLogs, Lease};
use podder_core::{ExecutorKind, JobState, ManifestId, Outcome};
use tokio::sync::watch;

use crate::envs::{self, Realized};
use crate::heartbeat::{self, Control, Controller};
use crate::images::EnvError;
use crate::logs::{self, LogSink};
use crate::prepare::{JobDirs, remove_tree};
use crate::retry::{CallError, with_retry};
use crate::stages::{outcome_of, plan, prepare_retrying, upload_output};
use crate::{Shared, build_job, docker_exec, executor};

/// How long a job's process runs before it is reported `running`.
const RUNNING_AFTER: std::time::Duration = std::time::Duration::from_millis(50);

/// How a job's driver ended.
enum End {
    /// With how long the process ran, when `running` was never reported.
    Finish(Box<Finish>, Option<u64>),
    Lost,
}

/// Runs one leased job to its end.
pub(crate) async fn run_lease(shared: Arc<Shared>, lease: Lease) {
    let id = lease.lease_id.clone();
    let job = lease.job.job_ref.to_string();
    tracing::info!(lease = %id, job = %job, attempt = lease.job.attempt, "leased a job");
    let client = &shared.client;
    let (log, rx) = LogSink::new(0);
    // With a server that takes them, the last lines go with the finish.
    let carry = lease.finish_with_logs;
    let uploader = tokio::spawn(logs::upload(client.clone(), id.clone(), rx, shared.deadline.clone(), carry));
    let (ctl, ctl_rx) = Controller::new();
    let ending = Arc::new(AtomicBool::new(false));
    let beats = tokio::spawn(heartbeat::run(client.clone(), id.clone(), lease.lease_ms, ctl.clone(), ending.clone()));
    let mut shutdown = shared.shutdown.clone();
    let ctl2 = ctl.clone();
    let forward = tokio::spawn(async move {
        if shutdown.wait_for(|s| *s).await.is_ok() {
            ctl2.set(Control::Shutdown);
        }
    });
    let dirs = shared.workspace.job_dirs(&id);
    let t0 = Instant::now();
    let end = drive(&shared, &lease, &dirs, &log, ctl_rx).await;
    forward.abort();
    let root = dirs.root.clone();
    let mut removal = None;
    match end {
        End::Finish(fin, ran_ms) => {
            ending.store(true, Ordering::SeqCst);
            log.close().await;
            let logs = uploader.await.map(|(_, rest)| rest).unwrap_or_default();
            stage(&id, t0, "logs shipped");
            // The job's directory is no longer needed: remove it meanwhile.
            removal = Some(tokio::task::spawn_blocking(move || remove_tree(&root)));
            let fin = FinishWithLogs { finish: *fin, logs, ran_ms };
            let res = if carry {
                with_retry("finishing the job", &shared.deadline, || client.finish_with_logs(&id, &fin)).await
            } else {
                with_retry("finishing the job", &shared.deadline, || client.finish(&id, &fin.finish)).await
            };
            let fin = fin.finish;
            match res {
                Ok(j) => {
                    tracing::info!(lease = %id, job = %job, state = %j.state, exit_code = ?fin.exit_code,
                    reason = fin.reason.as_deref().unwrap_or(""), "finished the job")
                }
                Err(CallError::Gone) => tracing::warn!(lease = %id, job = %job,
                    "the lease was lost before the job's end could be reported"),
                Err(e) => {
                    tracing::error!(lease = %id, job = %job, "cannot report the job's end: {e}")
                }
            }
        }
        End::Lost => {
            tracing::warn!(lease = %id, job = %job, "the lease was lost: the job was killed and is not reported");
            log.close().await;
            uploader.abort();
        }
    }
    stage(&id, t0, "reported");
    beats.abort();
    // Removed once more when the first try failed (a job that ended early
    // may have had files still being written then).
    let removed = match removal {
        Some(r) => matches!(r.await, Ok(Ok(()))),
        None => false,
    };
    if !removed {
        let root = dirs.root.clone();
        match tokio::task::spawn_blocking(move || remove_tree(&root)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("cannot remove {}: {e}", dirs.root.display()),
            Err(e) => tracing::warn!("cannot remove {}: {e}", dirs.root.display()),
        }
    }
    stage(&id, t0, "removed");
}

/// A debug-level timestamp of a job's stage, in ms since it was leased.
fn stage(lease: &str, t0: Instant, what: &str) {
    tracing::debug!(lease = %lease, ms = format_args!("{:.2}", t0.elapsed().as_secs_f64() * 1e3), "job stage: {what}");
}

fn finish(outcome: Outcome, exit_code: Option<i32>, output: Option<ManifestId>, reason: Option<String>) -> End {
    End::Finish(Box::new(Finish { outcome, exit_code, output, reason, build: None }), None)
}

/// The end of a job that never ran, for a control that arrived first.
fn ended_early(c: Control) -> End {
    match c {
        Control::Lost => End::Lost,
        Control::Shutdown => finish(Outcome::Failed, None, None, Some("agent shut down".into())),
        _ => finish(Outcome::Stopped, None, None, Some("stopped before it started".into())),
    }
}

async fn changed(ctl: &mut watch::Receiver<Control>) -> Control {
    let c = ctl.wait_for(|c| *c != Control::Run).await.map(|c| *c);
    match c {
        Ok(c) => c,
        Err(_) => std::future::pending().await,
    }
}

async fn drive(
    shared: &Shared,
    lease: &Lease,
    dirs: &JobDirs,
    log: &LogSink,
    mut ctl: watch::Receiver<Control>,
) -> End {
    let (client, id) = (&shared.client, lease.lease_id.as_str());
    let t0 = Instant::now();
    let t = |what: &str| stage(id, t0, what);
    // `preparing` is reported when preparing may take a while; a job whose
    // code and inputs are cached goes from assigned to running at once.
    if !instant(shared, lease) {
        match with_retry("reporting preparing", &shared.deadline, || client.set_state(id, JobState::Preparing)).await {
            Err(CallError::Gone) => return End::Lost,
            Err(e) => tracing::warn!(lease = %id, "cannot report the job as preparing: {e}"),
            Ok(()) => {}
        }
        t("preparing reported");
    }
    if lease.job.spec.build.is_some() {
        return drive_build(shared, lease, dirs, log, ctl).await;
    }
    let prepared = tokio::select! {
        r = async {
            let p = prepare_retrying(shared, lease, dirs, log).await?;
            let env = envs::realize(shared, lease, dirs, log).await?;
            anyhow::Ok((p, env))
        } => r,
        c = changed(&mut ctl) => return ended_early(c),
    };
    // The pins keep the job's input trees in the cache until it ends.
    let (mut plan, _pins, env) =
        match prepared.and_then(|(p, env)| Ok((plan(shared, lease, dirs, p.inputs)?, p.pins, env))) {
            Ok(p) => p,
            Err(e) => {
                if let Some(env) = e.downcast_ref::<EnvError>() {
                    log.system(format!("error: {env}")).await;
                    return finish(Outcome::Failed, None, None, Some(env.to_string()));
                }
                log.system(format!("error: the job could not be prepared: {e:#}")).await;
                return finish(Outcome::Failed, None, None, Some(format!("preparation failed: {e:#}")));
            }
        };
    t("prepared");
    let docker = match env {
        Realized::Process { env, extra_ro } => {
            plan.env.extend(env);
            plan.extra_ro = extra_ro;
            None
        }
        Realized::Docker(d) => Some(d),
    };
    if let c @ (Control::Lost | Control::Shutdown | Control::Stop) = *ctl.borrow() {
        return ended_early(c);
    }
    for s in &lease.job.spec.setup {
        log.system(format!("setup: {s}")).await;
    }
    let spawned = match (&docker, &shared.docker) {
        (Some(d), Some(images)) => docker_exec::spawn(&images.engine, &plan, d, log.clone()).await,
        _ => executor::spawn(plan, log.clone()).await.map_err(anyhow::Error::from),
    };
    let running = match spawned {
        Ok(r) => r,
        Err(e) => {
            log.system(format!("error: cannot start the job: {e:#}")).await;
            return finish(Outcome::Failed, None, None, Some(format!("cannot start the job: {e:#}")));
        }
    };
    t("spawned");
    // `running` is reported once the process has run for `RUNNING_AFTER`.
    // A job that ends sooner goes from assigned straight to its end (one
    // round trip and one database write fewer per step of a pipeline), and
    // its finish says how long it ran, which dates its start.
    let started = Instant::now();
    let quick = if lease.finish_with_logs {
        tokio::select! {
            info = running.wait() => Some(info),
            _ = tokio::time::sleep(RUNNING_AFTER) => None,
            _ = changed(&mut ctl) => None,
        }
    } else {
        None
    };
    let ran_ms = quick.as_ref().map(|_| started.elapsed().as_millis() as u64);
    let info = match quick {
        Some(info) => info,
        None => {
            match with_retry("reporting running", &shared.deadline, || client.set_state(id, JobState::Running)).await {
                Err(CallError::Gone) => {
                    running.kill();
                    let _ = running.wait().await;
                    running.release().await;
                    return End::Lost;
                }
                Err(e) => tracing::warn!(lease = %id, "cannot report the job as running: {e}"),
                Ok(()) => {}
            }
            t("running reported");
            loop {
                let c = *ctl.borrow_and_update();
                match c {
                    Control::Run => {}
                    Control::Stop | Control::Shutdown => running.stop(),
                    Control::Lost => running.kill(),
                }
                tokio::select! {
                    info = running.wait() => break info,
                    r = ctl.changed() => if r.is_err() { break running.wait().await },
                }
            }
        }
    };
    t("exited");
    let control = *ctl.borrow();
    if control == Control::Lost {
        return End::Lost;
    }
    let (mut outcome, mut reason) = outcome_of(&info, control, lease.job.spec.timeout_secs);
    log.system(match info.signal {
        Some(sig) => format!("the job ended: killed by signal {sig}"),
        None => format!("the job ended: exit code {}", info.code),
    })
    .await;
    let output = match upload_output(shared, dirs, lease.finish_with_logs).await {
        Ok((out, files, bytes)) => {
            log.system(format!("output: {files} files, {bytes} bytes")).await;
            Some(out)
        }
        Err(e) => {
            log.system(format!("error: the output could not be uploaded: {e:#}")).await;
            if outcome == Outcome::Succeeded {
                outcome = Outcome::Failed;
            }
            reason = Some(match reason {
                Some(r) => format!("{r}; the output could not be uploaded: {e:#}"),
                None => format!("the output could not be uploaded: {e:#}"),
            });
            None
        }
    };
    t("output uploaded");
    running.release().await;
    match finish(outcome, Some(info.code), output, reason) {
        End::Finish(fin, _) => End::Finish(fin, ran_ms),
        lost => lost,
    }
}

/// Whether the job can be prepared from the agent's caches alone, without
/// building anything: a process job without requirements whose code
/// manifest is known and whose inputs are cached.
fn instant(shared: &Shared, lease: &Lease) -> bool {
    let spec = &lease.job.spec;
    spec.build.is_none()
        && shared.config.executor == ExecutorKind::Process
        && spec.environment.as_ref().is_none_or(|e| e.requirements.is_none())
        && shared.workspace.ready(&spec.code, spec.inputs.iter().map(|i| &i.manifest))
}

/// A build job, from `running` to its end (see [`build_job`]).
async fn drive_build(
    shared: &Shared,
    lease: &Lease,
    dirs: &JobDirs,
    log: &LogSink,
    mut ctl: watch::Receiver<Control>,
) -> End {
    let (client, id) = (&shared.client, lease.lease_id.as_str());
    match with_retry("reporting running", &shared.deadline, || client.set_state(id, JobState::Running)).await {
        Err(CallError::Gone) => return End::Lost,
        Err(e) => tracing::warn!(lease = %id, "cannot report the job as running: {e}"),
        Ok(()) => {}
    }
    tokio::select! {
        fin = build_job::run(shared, lease, dirs, log) => End::Finish(Box::new(fin), None),
        c = changed(&mut ctl) => {
            log.system("the build was interrupted").await;
            ended_early(c)
        }
    }
}
