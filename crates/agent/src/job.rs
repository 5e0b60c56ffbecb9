//! One lease from start to end: report `preparing`, materialize the code
//! and inputs, report `running`, run the process, capture `/output`, ship
//! the log, `finish`, and remove the job's directory.
//!
//! A stop from the server, the agent's shutdown, or a lost lease may arrive
//! at any point (see [`Control`]); a lost lease ends the job without any
//! further report, anything else still ends with `finish`.

use std::sync::Arc;

use podder_core::api::{Finish, Lease};
use podder_core::{JobState, ManifestId, Outcome};
use tokio::sync::watch;

use crate::envs::{self, Realized};
use crate::heartbeat::{self, Control, Controller};
use crate::images::EnvError;
use crate::logs::{self, LogSink};
use crate::prepare::{JobDirs, remove_tree};
use crate::retry::{CallError, with_retry};
use crate::stages::{outcome_of, plan, prepare_retrying, upload_output};
use crate::{Shared, build_job, docker_exec, executor};

/// How a job's driver ended.
enum End {
    Finish(Box<Finish>),
    Lost,
}

/// Runs one leased job to its end.
pub(crate) async fn run_lease(shared: Arc<Shared>, lease: Lease) {
    let id = lease.lease_id.clone();
    let job = lease.job.job_ref.to_string();
    tracing::info!(lease = %id, job = %job, attempt = lease.job.attempt, "leased a job");
    let client = &shared.client;
    let (log, rx) = LogSink::new(0);
    let uploader = tokio::spawn(logs::upload(client.clone(), id.clone(), rx, shared.deadline.clone()));
    let (ctl, ctl_rx) = Controller::new();
    let beats = tokio::spawn(heartbeat::run(client.clone(), id.clone(), lease.lease_ms, ctl.clone()));
    let mut shutdown = shared.shutdown.clone();
    let ctl2 = ctl.clone();
    let forward = tokio::spawn(async move {
        if shutdown.wait_for(|s| *s).await.is_ok() {
            ctl2.set(Control::Shutdown);
        }
    });
    let dirs = shared.workspace.job_dirs(&id);
    let end = drive(&shared, &lease, &dirs, &log, ctl_rx).await;
    forward.abort();
    match end {
        End::Finish(fin) => {
            log.close().await;
            let _ = uploader.await;
            match with_retry("finishing the job", &shared.deadline, || client.finish(&id, &fin)).await {
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
    beats.abort();
    let root = dirs.root.clone();
    match tokio::task::spawn_blocking(move || remove_tree(&root)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("cannot remove {}: {e}", dirs.root.display()),
        Err(e) => tracing::warn!("cannot remove {}: {e}", dirs.root.display()),
    }
}

fn finish(outcome: Outcome, exit_code: Option<i32>, output: Option<ManifestId>, reason: Option<String>) -> End {
    End::Finish(Box::new(Finish { outcome, exit_code, output, reason, build: None }))
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
    match with_retry("reporting preparing", &shared.deadline, || client.set_state(id, JobState::Preparing)).await {
        Err(CallError::Gone) => return End::Lost,
        Err(e) => tracing::warn!(lease = %id, "cannot report the job as preparing: {e}"),
        Ok(()) => {}
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
    // `running` means the process (or container) has started.
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
    let info = loop {
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
    };
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
    let output = match upload_output(shared, dirs).await {
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
    running.release().await;
    finish(outcome, Some(info.code), output, reason)
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
        fin = build_job::run(shared, lease, dirs, log) => End::Finish(Box::new(fin)),
        c = changed(&mut ctl) => {
            log.system("the build was interrupted").await;
            ended_early(c)
        }
    }
}
