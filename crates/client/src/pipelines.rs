//! Pipelines (`/projects/{owner}/{project}/pipelines`) and their runs: one
//! method per route, like the rest of [`Client`].

use std::time::Duration;

use podder_core::Name;
use podder_core::api::{ApplyPipeline, Pipeline, PipelineRun, RetryRun, StartRun};
use reqwest::Method;

use crate::{Client, Result};

fn pipelines(owner: &Name, project: &Name) -> String {
    format!("/projects/{owner}/{project}/pipelines")
}

impl Client {
    /// Creates or updates a pipeline from its file (a new version when the
    /// file or the code changed). A file with problems is refused with
    /// every problem, each with its file and line.
    pub async fn apply_pipeline(&self, owner: &Name, project: &Name, req: &ApplyPipeline) -> Result<Pipeline> {
        self.post(&pipelines(owner, project), req).await
    }

    pub async fn list_pipelines(&self, owner: &Name, project: &Name) -> Result<Vec<Pipeline>> {
        self.get(&pipelines(owner, project)).await
    }

    pub async fn get_pipeline(&self, owner: &Name, project: &Name, name: &Name) -> Result<Pipeline> {
        self.get(&format!("{}/{name}", pipelines(owner, project))).await
    }

    /// Pauses (`true`) or resumes (`false`) the pipeline's schedule.
    pub async fn pause_pipeline(&self, owner: &Name, project: &Name, name: &Name, paused: bool) -> Result<Pipeline> {
        let what = if paused { "pause" } else { "resume" };
        self.post(&format!("{}/{name}/{what}", pipelines(owner, project)), &()).await
    }

    /// Starts a run (or, with `only`, one step alone).
    pub async fn start_run(&self, owner: &Name, project: &Name, name: &Name, req: &StartRun) -> Result<PipelineRun> {
        self.post(&format!("{}/{name}/runs", pipelines(owner, project)), req).await
    }

    /// A pipeline's runs, newest first.
    pub async fn list_runs(&self, owner: &Name, project: &Name, name: &Name) -> Result<Vec<PipelineRun>> {
        self.get(&format!("{}/{name}/runs", pipelines(owner, project))).await
    }

    /// One run. With `after`, waits up to `wait_ms` for a revision newer
    /// than `after` (answering at once if there is one): follow a run by
    /// passing the revision of the previous answer.
    pub async fn get_run(
        &self,
        owner: &Name,
        project: &Name,
        name: &Name,
        number: u64,
        after: Option<u64>,
        wait_ms: u64,
    ) -> Result<PipelineRun> {
        let mut path = format!("{}/{name}/runs/{number}?wait_ms={wait_ms}", pipelines(owner, project));
        if let Some(after) = after {
            path.push_str(&format!("&after={after}"));
        }
        self.json(self.req(Method::GET, &path).timeout(Duration::from_millis(wait_ms + 30_000))).await
    }

    /// A new run that keeps the results before `from` (default: before the
    /// failed steps) and runs the rest.
    pub async fn retry_run(
        &self,
        owner: &Name,
        project: &Name,
        name: &Name,
        number: u64,
        req: &RetryRun,
    ) -> Result<PipelineRun> {
        self.post(&format!("{}/{name}/runs/{number}/retry", pipelines(owner, project)), req).await
    }

    /// Cancels a run: its running steps' jobs are stopped.
    pub async fn cancel_run(&self, owner: &Name, project: &Name, name: &Name, number: u64) -> Result<PipelineRun> {
        self.post(&format!("{}/{name}/runs/{number}/cancel", pipelines(owner, project)), &()).await
    }
}
