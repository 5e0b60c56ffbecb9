//! `podder run`: snapshot the code directory, upload only what the server
//! lacks, submit the job, and optionally follow it.
//!
//! Everything the user typed is checked before anything is uploaded or
//! created, so a bad flag leaves no trace on the server.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use podder_client::transfer;
use podder_core::api::SubmitJob;
use podder_core::env::{Resources, parse_bytes};
use podder_core::refs::check_mounts;
use podder_core::{DataSpec, EnvRef};
use podder_store::scan::ScanOptions;

use crate::args::{ResourceArgs, RunArgs};
use crate::config::ProjectFile;
use crate::ctx::Ctx;
use crate::display;

pub fn parse_params(raw: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for p in raw {
        let (k, v) = p.split_once('=').ok_or_else(|| anyhow!("--param '{p}' has no '=': write it as K=V"))?;
        let valid = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            bail!("--param name '{k}' is not valid: use letters, digits and '_', not starting with a digit");
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            bail!("--param {k} is given twice");
        }
    }
    Ok(out)
}

/// `90`, `90s`, `10m`, `2h`, `1h30m` → seconds, for `--timeout` (not 0).
pub fn parse_duration(s: &str) -> Result<u64> {
    match podder_core::duration::parse_duration(s) {
        Ok(0) => bail!("--timeout '{s}' is zero: give how long the job may run, e.g. 90s, 10m or 2h"),
        Ok(n) => Ok(n),
        Err(e) => bail!("--timeout {e}"),
    }
}

/// `--gpu/--cpu/--cpus/--memory/--no-network` → checked [`Resources`].
pub fn resources(a: &ResourceArgs) -> Result<Resources> {
    let r = Resources {
        gpus: if a.cpu { 0 } else { a.gpu.unwrap_or(0) },
        cpus: a.cpus,
        memory_bytes: a.memory.as_deref().map(parse_bytes).transpose()?,
        no_network: a.no_network,
    };
    r.check()?;
    Ok(r)
}

/// `--env`, else podder.yaml's `env`.
fn environment(flag: Option<String>) -> Result<Option<String>> {
    let env = match flag {
        Some(e) => Some(e),
        None => ProjectFile::find(&std::env::current_dir()?)?.and_then(|(pf, _)| pf.env),
    };
    if let Some(e) = &env {
        e.parse::<EnvRef>()?;
    }
    Ok(env)
}

/// Words before `--` are not options of `run`: the command goes after `--`.
pub fn check_no_stray(stray: &[String], command: &[String]) -> Result<()> {
    let Some(first) = stray.first() else { return Ok(()) };
    if first.starts_with('-') {
        bail!(
            "`podder run` has no option '{first}' (see `podder run --help`); the command to run goes after `--`, \
             e.g. podder run -- python train.py"
        );
    }
    let argv: Vec<&String> = stray.iter().chain(command).collect();
    let typed = argv.iter().map(|w| display::shell_word(w)).collect::<Vec<_>>().join(" ");
    bail!("'{first}' is not an option of `podder run`: put the command after `--`, e.g. podder run -- {typed}")
}

pub async fn run(ctx: &Ctx, a: RunArgs) -> Result<i32> {
    if a.command.is_empty() || a.command.iter().all(|c| c.trim().is_empty()) {
        bail!("the command is empty: give one after --, e.g. podder run -- python train.py");
    }
    let specs: Vec<DataSpec> = a.data.iter().map(|d| d.parse::<DataSpec>()).collect::<Result<_, _>>()?;
    check_mounts(specs.iter().map(|s| &s.mount))?;
    let params = parse_params(&a.params)?;
    let timeout_secs = a.timeout.as_deref().map(parse_duration).transpose()?;
    let resources = resources(&a.resources)?;
    let env = environment(a.env)?;
    let (owner, project) = ctx.project(a.project.as_deref())?;
    ctx.client.project(&owner, &project).await.map_err(|e| match e.status() {
        Some(404) => anyhow!("project {owner}/{project} does not exist: create it with `podder init {project}`"),
        _ => e.into(),
    })?;

    let dir = match a.dir {
        Some(d) => d,
        None => std::env::current_dir()?,
    };
    let report = upload_code(ctx, dir, a.max_code_bytes).await?;
    let job = ctx
        .client
        .submit(
            &owner,
            &project,
            &SubmitJob {
                code: report.manifest,
                command: a.command,
                setup: a.setup,
                params,
                data: a.data,
                env,
                timeout_secs,
                retries: a.retries,
                queue: a.queue,
                message: a.message,
                resources,
                build: None,
            },
        )
        .await?;
    if a.json {
        display::json(&job)?;
    } else {
        println!("{}", job.job_ref);
    }
    if a.follow {
        let done = super::logs::follow(ctx, &job.job_ref).await?;
        return Ok(super::logs::exit_code(&done));
    }
    Ok(0)
}

/// Scans and uploads a code directory; prints a one-line summary on stderr.
pub async fn upload_code(ctx: &Ctx, dir: PathBuf, max_bytes: u64) -> Result<transfer::UploadReport> {
    let opts = ScanOptions { respect_ignore: true, max_bytes: Some(max_bytes), threads: 0 };
    let (_, report) = super::data_upload::scan_and_upload(&ctx.client, &dir, &opts, "uploading code", true)
        .await
        .map_err(|e| match e.downcast::<podder_store::scan::ScanError>() {
            Ok(e) => anyhow::Error::new(e).context(format!("snapshotting {}", dir.display())),
            Err(e) => e,
        })?;
    eprintln!(
        "code: {}, {} (sent {} of {}, {})",
        display::count(report.files as u64, "file"),
        display::bytes(report.bytes_total),
        report.chunks_sent,
        display::count(report.chunks_total as u64, "chunk"),
        display::bytes(report.bytes_sent)
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_and_durations() {
        assert_eq!(parse_params(&["lr=0.1".into()]).unwrap()["lr"], "0.1");
        assert!(parse_params(&["lr".into()]).is_err());
        assert!(parse_params(&["1x=2".into()]).is_err());
        assert!(parse_params(&["a=1".into(), "a=2".into()]).is_err());
        assert_eq!(parse_duration("10m").unwrap(), 600);
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("0").is_err());
    }
}
