//! Build jobs (`task build`): the job's spec names an [`ImageBuild`]; the
//! agent gets the context (the task directory's tree, or a Git clone at the
//! reference, whose commit it records), checks its `task.yaml`, builds the
//! image tagged [`ImageBuild::tag`] (computed once the commit is known),
//! with the obfuscation pass when asked, and reports a [`BuildResult`].
//! The build's output is the job's log. Docker agents only.
//!
//! [`ImageBuild`]: podder_core::ImageBuild
//! [`ImageBuild::tag`]: podder_core::ImageBuild::tag

use podder_core::Outcome;
use podder_core::api::{BuildResult, Finish, Lease};

use crate::Shared;
use crate::images::{fetch_context, read_task};
use crate::logs::LogSink;
use crate::prepare::JobDirs;

fn failed(reason: String) -> Finish {
    Finish { outcome: Outcome::Failed, exit_code: None, output: None, reason: Some(reason), build: None }
}

/// Runs the build job of `lease` to its end.
pub(crate) async fn run(shared: &Shared, lease: &Lease, dirs: &JobDirs, log: &LogSink) -> Finish {
    let spec = &lease.job.spec;
    let Some(mut build) = spec.build.clone() else { return failed("not a build job".into()) };
    let Some(images) = &shared.docker else {
        let why = format!("a build job needs a docker agent, and '{}' runs the process executor", shared.config.name);
        log.system(format!("error: {why}")).await;
        return failed(why);
    };
    let ctx = dirs.root.join("context");
    if let Err(e) = std::fs::create_dir_all(&dirs.root) {
        return failed(format!("cannot create {}: {e}", dirs.root.display()));
    }
    if let Err(e) = fetch_context(shared, &mut build, Some(spec.code), &ctx, log).await {
        log.system(format!("error: cannot get the build context: {e:#}")).await;
        return failed(format!("cannot get the build context: {e:#}"));
    }
    let (task, task_yaml) = match read_task(&ctx) {
        Ok(t) => t,
        Err(e) => {
            log.system(format!("error: {e}")).await;
            return failed(e.to_string());
        }
    };
    let tag = build.tag();
    log.system(format!("building task '{}' as {tag}{}", task.name, if build.obfuscate { " (obfuscated)" } else { "" }))
        .await;
    match images.build_context(&ctx, &build, &tag, &task.workdir, log).await {
        Ok(image_id) => {
            log.system(format!("built {tag} ({image_id})")).await;
            Finish {
                outcome: Outcome::Succeeded,
                exit_code: Some(0),
                output: None,
                reason: None,
                build: Some(BuildResult { image: tag, image_id, build, task_yaml }),
            }
        }
        Err(e) => {
            log.system(format!("error: the image build failed: {e:#}")).await;
            failed(format!("image build failed: {e:#}"))
        }
    }
}
