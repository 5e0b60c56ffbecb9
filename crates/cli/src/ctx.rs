//! What every client command needs: a connected client, who we are, and
//! helpers to resolve the names the user typed.

use anyhow::{Context as _, Result, anyhow};
use podder_client::Client;
use podder_core::{JobRef, Name};

use crate::config::{ClientConfig, ProjectFile};

pub struct Ctx {
    pub client: Client,
    pub me: Name,
}

impl Ctx {
    pub async fn connect() -> Result<Ctx> {
        let cfg = ClientConfig::load()?;
        let server = cfg.server.ok_or_else(|| {
            anyhow!(
                "no server configured: start one with `podder up`, or run `podder login --server URL --token TOKEN`"
            )
        })?;
        let token = cfg
            .token
            .ok_or_else(|| anyhow!("no token configured: run `podder login --server {server} --token TOKEN`"))?;
        // PODDER_LOCAL_INGEST=0 sends every upload over HTTP, also to a
        // server on this machine.
        let local = std::env::var("PODDER_LOCAL_INGEST").map_or(true, |v| !matches!(v.as_str(), "0" | "off" | "false"));
        let client = Client::new(&server, &token)?.with_local_ingest(local);
        let me = client.whoami().await?.owner;
        Ok(Ctx { client, me })
    }

    /// The project named by `--project` or the nearest `podder.yaml`.
    pub fn project(&self, flag: Option<&str>) -> Result<(Name, Name)> {
        let spec = match flag {
            Some(p) => p.to_string(),
            None => {
                let cwd = std::env::current_dir()?;
                let (pf, _) = ProjectFile::find(&cwd)?.ok_or_else(|| {
                    anyhow!(
                        "no podder.yaml in this directory or its parents: run `podder init NAME` here first, \
                         or pass --project NAME (or name the job in full, e.g. mnist#2)"
                    )
                })?;
                pf.project
            }
        };
        self.split_project(&spec)
    }

    pub fn split_project(&self, spec: &str) -> Result<(Name, Name)> {
        match spec.split_once('/') {
            Some((o, n)) => Ok((o.parse()?, n.parse()?)),
            None => Ok((self.me.clone(), spec.parse().context("bad project name")?)),
        }
    }

    /// Parses a job ref; a bare number means that job of the project named
    /// by `--project` (`project`), else of the nearest `podder.yaml`.
    pub fn job_ref(&self, s: &str, project: Option<&str>) -> Result<JobRef> {
        if let Ok(n) = s.trim_start_matches('#').parse::<u64>() {
            let (owner, project) = self.project(project)?;
            return Ok(JobRef { owner: Some(owner), project, number: n });
        }
        Ok(s.parse::<JobRef>()?.with_owner(&self.me))
    }
}
