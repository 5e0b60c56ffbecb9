//! One file per command; `dispatch` is the one exhaustive match.

mod admin;
mod agent;
mod agents;
mod clone;
mod data;
mod data_delete;
mod data_download;
mod data_ls;
mod data_upload;
mod demo;
mod env;
mod init;
mod login;
mod logs;
mod output;
mod pipeline;
mod pipeline_run;
mod project;
mod restart;
mod run;
mod serve;
mod status;
mod stop;
mod task;
mod task_build;
mod task_new;

use anyhow::Result;

use crate::args::{Cli, Command};
use crate::ctx::Ctx;

/// Runs one command; returns the process exit code.
pub async fn dispatch(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Up(a) => serve::up(a).await,
        Command::Server(a) => serve::server(a).await,
        Command::Agent(a) => agent::run(a).await,
        Command::Login { server, token } => login::run(&server, &token).await,
        Command::Demo { data_dir, keep, listen } => demo::run(data_dir, keep, listen).await,
        Command::Project(p) => project::run(&Ctx::connect().await?, p).await,
        Command::Init { name } => init::run(&Ctx::connect().await?, &name).await,
        Command::Run(a) => {
            // Before connecting: a misplaced command is the user's to fix first.
            run::check_no_stray(&a.stray, &a.command)?;
            run::run(&Ctx::connect().await?, a).await
        }
        Command::Status { job, project, json } => {
            status::run(&Ctx::connect().await?, job.as_deref(), project.as_deref(), json).await
        }
        Command::Logs { job, follow, project } => {
            logs::run(&Ctx::connect().await?, &job, project.as_deref(), follow).await
        }
        Command::Stop { job, project } => stop::run(&Ctx::connect().await?, &job, project.as_deref()).await,
        Command::Restart { job, follow, project, json } => {
            restart::run(&Ctx::connect().await?, &job, project.as_deref(), follow, json).await
        }
        Command::Clone { job, dir, project } => clone::run(&Ctx::connect().await?, &job, project.as_deref(), dir).await,
        Command::Output { job, download, path, project, json } => {
            let ctx = Ctx::connect().await?;
            output::run(&ctx, &job, project.as_deref(), download, path.as_deref(), json).await
        }
        Command::Data(d) => data::run(&Ctx::connect().await?, d).await,
        Command::Admin(a) => admin::run(&Ctx::connect().await?, a).await,
        Command::Env(e) => env::run(&Ctx::connect().await?, e).await,
        Command::Task(t) => task::run(&Ctx::connect().await?, t).await,
        Command::Pipeline(p) => pipeline::run(&Ctx::connect().await?, p).await,
        Command::Agents { json } => agents::run(&Ctx::connect().await?, json).await,
    }
}

/// The log file of a command that runs a server or an agent (see
/// `crate::logging`); `None` for client commands, which keep no log.
pub fn log_file(command: &Command) -> Option<std::path::PathBuf> {
    let dir = match command {
        Command::Up(a) | Command::Server(a) => a.data_dir.clone().unwrap_or_else(crate::config::default_data_dir),
        Command::Demo { data_dir, .. } => demo::data_dir(data_dir.as_deref()),
        Command::Agent(a) => agent::work_dir(a),
        _ => return None,
    };
    Some(crate::logging::log_file(&dir))
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
