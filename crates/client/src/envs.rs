//! Environments (`/envs`), agents (`/agents`) and tasks
//! (`/projects/{owner}/{project}/tasks`): one method per route, like the
//! rest of [`Client`].

use podder_core::Name;
use podder_core::api::{AgentInfo, CreateEnv, DeployTask, Environment, Job, RunTask, Task};

use crate::{Client, Result};

impl Client {
    /// The stock environments and the caller's own.
    pub async fn list_envs(&self) -> Result<Vec<Environment>> {
        self.get("/envs").await
    }

    /// Creates (or with `replace`, replaces) an environment; with `stock`
    /// (admins only) one of the shared stock ones. 409 when it exists.
    pub async fn create_env(&self, req: &CreateEnv) -> Result<Environment> {
        self.post("/envs", req).await
    }

    pub async fn get_env(&self, owner: &Name, name: &Name) -> Result<Environment> {
        self.get(&format!("/envs/{owner}/{name}")).await
    }

    /// Deletes one's own environment (a stock one: admins only). Jobs keep
    /// the environment they resolved.
    pub async fn delete_env(&self, owner: &Name, name: &Name) -> Result<()> {
        self.delete(&format!("/envs/{owner}/{name}")).await
    }

    /// Every agent as the server last saw it, with the GPUs in use.
    pub async fn list_agents(&self) -> Result<Vec<AgentInfo>> {
        self.get("/agents").await
    }

    /// Registers the task a succeeded build job built (by default the
    /// project's newest one).
    pub async fn deploy_task(&self, owner: &Name, project: &Name, req: &DeployTask) -> Result<Task> {
        self.post(&format!("/projects/{owner}/{project}/tasks"), req).await
    }

    pub async fn list_tasks(&self, owner: &Name, project: &Name) -> Result<Vec<Task>> {
        self.get(&format!("/projects/{owner}/{project}/tasks")).await
    }

    pub async fn get_task(&self, owner: &Name, project: &Name, name: &Name) -> Result<Task> {
        self.get(&format!("/projects/{owner}/{project}/tasks/{name}")).await
    }

    /// Runs a deployed task: an ordinary job in the task's image.
    pub async fn run_task(&self, owner: &Name, project: &Name, name: &Name, req: &RunTask) -> Result<Job> {
        self.post(&format!("/projects/{owner}/{project}/tasks/{name}/runs"), req).await
    }
}
