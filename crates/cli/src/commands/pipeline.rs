//! `podder pipeline ...`: dispatch and the small commands (apply, list,
//! show, runs, pause, resume, cancel). Runs and their live view are in
//! `pipeline_run.rs`.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use podder_core::Name;
use podder_core::api::{ApplyPipeline, Pipeline};

use crate::args::PipelineCmd;
use crate::ctx::Ctx;
use crate::display;

pub async fn run(ctx: &Ctx, cmd: PipelineCmd) -> Result<i32> {
    match cmd {
        PipelineCmd::Apply { file, project, json } => apply(ctx, &file, project.as_deref(), json).await,
        PipelineCmd::List { project, json } => {
            let (owner, project) = ctx.project(project.as_deref())?;
            let list = ctx.client.list_pipelines(&owner, &project).await?;
            if json {
                return display::json(&list).map(|_| 0);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|p| {
                    vec![
                        p.name.to_string(),
                        format!("v{}", p.version),
                        steps(p).len().to_string(),
                        schedule(p),
                        next_run(p),
                    ]
                })
                .collect();
            display::table(&["NAME", "VERSION", "STEPS", "SCHEDULE", "NEXT RUN"], &rows);
            Ok(0)
        }
        PipelineCmd::Show { name, project, json } => {
            let (owner, project) = ctx.project(project.as_deref())?;
            let p = ctx.client.get_pipeline(&owner, &project, &name.parse()?).await?;
            if json {
                return display::json(&p).map(|_| 0);
            }
            println!("pipeline:  {}/{}/{} v{}", p.owner, p.project, p.name, p.version);
            if !p.description.is_empty() {
                println!("           {}", p.description);
            }
            println!("schedule:  {}", schedule(&p));
            println!("next run:  {}", next_run(&p));
            for (name, needs) in steps(&p) {
                let after = if needs.is_empty() { String::new() } else { format!("  (after {})", needs.join(", ")) };
                println!("step:      {name}{after}");
            }
            Ok(0)
        }
        PipelineCmd::Run { name, params, only, follow, project, json } => {
            super::pipeline_run::start(ctx, &name, &params, only, follow, project.as_deref(), json).await
        }
        PipelineCmd::Status { run, follow, project, json } => {
            super::pipeline_run::status(ctx, &run, follow, project.as_deref(), json).await
        }
        PipelineCmd::Retry { run, from, follow, project, json } => {
            super::pipeline_run::retry(ctx, &run, from, follow, project.as_deref(), json).await
        }
        PipelineCmd::Runs { name, project, json } => {
            let (owner, project) = ctx.project(project.as_deref())?;
            let runs = ctx.client.list_runs(&owner, &project, &name.parse()?).await?;
            if json {
                return display::json(&runs).map(|_| 0);
            }
            let rows: Vec<Vec<String>> = runs
                .iter()
                .map(|r| {
                    let done = r.steps.iter().filter(|s| is_done(&s.state)).count();
                    let took = r.finished_at.map(|f| display::duration_ms(f - r.created_at)).unwrap_or("-".into());
                    vec![
                        format!("{}/{}", r.pipeline, r.number),
                        r.state.clone(),
                        r.trigger.clone(),
                        format!("{done}/{}", r.steps.len()),
                        display::ago(r.created_at),
                        took,
                    ]
                })
                .collect();
            display::table(&["RUN", "STATE", "TRIGGER", "STEPS DONE", "STARTED", "TOOK"], &rows);
            Ok(0)
        }
        PipelineCmd::Pause { name, project } => pause(ctx, &name, project.as_deref(), true).await,
        PipelineCmd::Resume { name, project } => pause(ctx, &name, project.as_deref(), false).await,
        PipelineCmd::Cancel { run, project } => {
            let (owner, project) = ctx.project(project.as_deref())?;
            let (name, number) = parse_run(&run)?;
            let r = ctx.client.cancel_run(&owner, &project, &name, number).await?;
            eprintln!("{}/{} {}", r.pipeline, r.number, r.state);
            Ok(0)
        }
    }
}

async fn apply(ctx: &Ctx, file: &Path, project: Option<&str>, json: bool) -> Result<i32> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let (owner, project) = ctx.project(project)?;
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::env::current_dir()?,
    };
    let code = super::run::upload_code(ctx, dir, 1 << 30).await?.manifest;
    let req = ApplyPipeline { file: text, file_name: file.display().to_string(), code };
    let p = ctx.client.apply_pipeline(&owner, &project, &req).await?;
    if json {
        return display::json(&p).map(|_| 0);
    }
    eprintln!("pipeline {} v{}: {} steps, schedule {}", p.name, p.version, steps(&p).len(), schedule(&p));
    Ok(0)
}

async fn pause(ctx: &Ctx, name: &str, project: Option<&str>, paused: bool) -> Result<i32> {
    let (owner, project) = ctx.project(project)?;
    let p = ctx.client.pause_pipeline(&owner, &project, &name.parse()?, paused).await?;
    eprintln!("pipeline {}: schedule {}", p.name, if p.paused { "paused" } else { "active" });
    Ok(0)
}

/// `NAME/N` → (name, number).
pub fn parse_run(s: &str) -> Result<(Name, u64)> {
    let (name, n) =
        s.rsplit_once('/').ok_or_else(|| anyhow!("'{s}' is not a run: write PIPELINE/N, e.g. nightly/3"))?;
    let n: u64 = n.parse().map_err(|_| anyhow!("'{s}' is not a run: N must be a number, e.g. nightly/3"))?;
    if n == 0 {
        bail!("runs are numbered from 1");
    }
    Ok((name.parse()?, n))
}

pub fn is_done(state: &str) -> bool {
    matches!(state, "succeeded" | "cached" | "failed" | "skipped" | "cancelled")
}

/// (step, needs) from the pipeline's spec.
fn steps(p: &Pipeline) -> Vec<(String, Vec<String>)> {
    let Some(steps) = p.spec["steps"].as_array() else { return vec![] };
    steps
        .iter()
        .map(|s| {
            let needs = s["needs"].as_array().map(|n| n.iter().filter_map(|x| x.as_str().map(String::from)).collect());
            (s["name"].as_str().unwrap_or("?").to_string(), needs.unwrap_or_default())
        })
        .collect()
}

fn schedule(p: &Pipeline) -> String {
    let s = &p.spec["schedule"];
    match s["cron"].as_str() {
        Some(c) => {
            let tz = s["timezone"].as_str().unwrap_or("UTC");
            format!("{c} ({tz}){}", if p.paused { ", paused" } else { "" })
        }
        None => "-".into(),
    }
}

fn next_run(p: &Pipeline) -> String {
    match p.next_run_at {
        Some(t) => {
            let in_ms = t - display::now_ms();
            format!("in {}", display::duration_ms(in_ms))
        }
        None => "-".into(),
    }
}
