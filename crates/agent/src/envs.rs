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

/// Where a job's own venv goes (see [`with_job_venv`]): the sandbox's
/// private `/tmp` (and the container's), or the job's workspace when it runs
/// unsandboxed on the host, so that it goes with the job.
pub(crate) fn job_venv_dir(shared: &Shared, dirs: &JobDirs) -> String {
    let on_host = shared.config.executor == ExecutorKind::Process && !shared.sandbox.is_sandboxed();
    if on_host { dirs.root.join("venv").to_string_lossy().into_owned() } else { "/tmp/podder-venv".into() }
}

/// The setup commands of a job, run in a venv of its own when its
/// environment gave it none: `pip install` in `--setup` then installs into
/// that venv instead of failing on a system Python that refuses it
/// (PEP 668's `externally-managed-environment`) or cannot be written. The
/// venv sees the system's (or the image's) packages
/// (`--system-site-packages`), and is made without pip when the system's
/// pip can be borrowed (0.1 s instead of seconds), with `pip` and `pip3`
/// running it. Jobs without setup commands, in an environment's venv
/// (`VIRTUAL_ENV` set), or without `python3` are left as they are.
pub(crate) fn with_job_venv(setup: &[String], venv: &str) -> Vec<String> {
    if setup.is_empty() {
        return Vec::new();
    }
    let v = format!("'{}'", venv.replace('\'', "'\\''"));
    let prelude = format!(
        "if [ -z \"${{VIRTUAL_ENV:-}}\" ] && command -v python3 >/dev/null 2>&1; then \
         if python3 -c 'import pip' >/dev/null 2>&1; then \
         python3 -m venv --without-pip --system-site-packages {v}; \
         for p in pip pip3; do printf '#!/bin/sh\\nexec %s/bin/python -m pip \"$@\"\\n' {v} > {v}/bin/$p; \
         chmod +x {v}/bin/$p; done; \
         else python3 -m venv --system-site-packages {v}; fi; \
         export VIRTUAL_ENV={v} PATH={v}/bin:\"$PATH\"; fi"
    );
    std::iter::once(prelude).chain(setup.iter().cloned()).collect()
}

#[cfg(test)]
mod tests {
    use super::with_job_venv;

    /// The prelude really makes a venv that `pip install` writes into, and
    /// leaves an environment's venv alone.
    #[test]
    fn setup_runs_in_a_venv_of_the_job() {
        assert!(with_job_venv(&[], "/tmp/x").is_empty(), "no setup, no venv");
        if std::process::Command::new("python3").arg("--version").output().is_err() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let venv = dir.path().join("v");
        let setup = with_job_venv(&["pip --version".into(), "echo \"$VIRTUAL_ENV\"".into()], venv.to_str().unwrap());
        let script = format!("set -e\n{}\n", setup.join("\n"));
        let out =
            std::process::Command::new("/bin/sh").arg("-c").arg(&script).env_remove("VIRTUAL_ENV").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains(venv.to_str().unwrap()), "{text}");
        assert!(venv.join("bin/python").exists() && venv.join("bin/pip").exists());
        let kept = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("set -e\n{}\necho \"$VIRTUAL_ENV\"\n", with_job_venv(&["true".into()], "/nonexistent/v")[0]))
            .env("VIRTUAL_ENV", "/opt/env")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&kept.stdout).trim(), "/opt/env");
    }
}
