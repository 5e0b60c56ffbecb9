//! Realizing a job's environment before it runs: for the process executor,
//! the GPU variables and the requirement environment's venv (see [`venv`]);
//! for the docker executor, the image (see [`images`]) and the container's
//! user, limits, GPUs and labels.
//!
//! [`venv`]: crate::venv
//! [`images`]: crate::images

use std::collections::BTreeMap;
use std::path::PathBuf;

use podder_core::ExecutorKind;
use podder_core::api::Lease;

use crate::docker_exec::DockerPlan;
use crate::images::EnvError;
use crate::inventory::gpu_env;
use crate::logs::LogSink;
use crate::prepare::JobDirs;
use crate::venv::venv_env;
use crate::{LABEL_AGENT, LABEL_JOB, Shared};

/// What a job's environment turned into.
pub(crate) enum Realized {
    /// Extra variables and read-only binds for the process executor.
    Process {
        env: Vec<(String, String)>,
        extra_ro: Vec<PathBuf>,
    },
    Docker(DockerPlan),
}

/// Makes the job's environment ready (building what is missing; the output
/// of builds goes to `log`). Errors that are the environment's fault are
/// [`EnvError`]s, whose text is the job's reason.
pub(crate) async fn realize(shared: &Shared, lease: &Lease, dirs: &JobDirs, log: &LogSink) -> anyhow::Result<Realized> {
    let job = &lease.job;
    let spec = &job.spec;
    match shared.config.executor {
        ExecutorKind::Process => {
            let mut env = gpu_env(&job.gpus);
            let mut extra_ro = Vec::new();
            if let Some(e) = &spec.environment {
                if e.needs_docker() {
                    return Err(EnvError(format!(
                        "the environment '{}' needs the docker executor (it is a Docker image without Python \
                         requirements), but agent '{}' runs the process executor: run it on an agent started \
                         with --executor docker",
                        e.name, shared.config.name
                    ))
                    .into());
                }
                if let (Some(req), Some(hash)) = (&e.requirements, e.requirements_hash()) {
                    let venv = shared
                        .venvs
                        .ensure(&hash, req, log)
                        .await
                        .map_err(|err| EnvError(format!("environment build failed: {err:#}")))?;
                    env.extend(venv_env(&venv));
                    extra_ro.push(venv);
                }
            }
            Ok(Realized::Process { env, extra_ro })
        }
        ExecutorKind::Docker => {
            let images = shared.docker.as_ref().expect("a docker agent has an engine");
            let scratch = dirs.root.join("env");
            let image = images.image_for(shared, lease, &scratch, log).await?;
            let _ = std::fs::remove_dir_all(&scratch);
            log.system(format!("environment: running in image {image}")).await;
            let r = &spec.resources;
            Ok(Realized::Docker(DockerPlan {
                image,
                user: Some(shared.config.docker_user.clone()),
                workdir: spec.environment.as_ref().and_then(|e| e.workdir.clone()),
                gpus: job.gpus.clone(),
                cpus: r.cpus,
                memory_bytes: r.memory_bytes,
                no_network: r.no_network,
                network: images.network.clone(),
                labels: BTreeMap::from([
                    (LABEL_JOB.to_string(), job.job_ref.to_string()),
                    (LABEL_AGENT.to_string(), shared.config.name.clone()),
                ]),
            }))
        }
    }
}
