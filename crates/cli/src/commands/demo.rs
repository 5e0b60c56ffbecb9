//! `podder demo`: a fresh embedded server and agent, a bundled training
//! script run with its logs followed, then an evaluation job that mounts the
//! first job's output. Shows the whole loop on a new machine in one command.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use podder_agent::{AgentConfig, SandboxMode};
use podder_client::Client;
use podder_core::api::{Job, SubmitJob};
use podder_core::{JobRef, JobState};

use crate::args::ServeArgs;
use crate::ctx::Ctx;

const TRAIN: &str = include_str!("../../examples/demo/train.py");
const EVALUATE: &str = include_str!("../../examples/demo/evaluate.py");

/// Where the demo keeps its data: `--data-dir`, else a new directory in the
/// temporary directory (removed at the end, unless the demo failed).
pub fn data_dir(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("podder-demo-{}", std::process::id())))
}

pub async fn run(data_dir_flag: Option<PathBuf>, keep: bool, listen: SocketAddr) -> Result<i32> {
    let temporary = data_dir_flag.is_none();
    let data_dir = data_dir(data_dir_flag.as_deref());
    let args = ServeArgs {
        listen,
        data_dir: Some(data_dir.clone()),
        lease_timeout: 30,
        admin: Some("demo".into()),
        slots: 2,
        sandbox: "auto".into(),
        quota_bytes: None,
        gc_grace: 3600,
        cache_bytes: None,
        executor: "process".into(),
        gpus: "auto".into(),
        no_local_ingest: false,
    };
    let started = super::serve::start(&args).await?;
    let url = started.url.clone();
    let server = started.server.clone();
    let token = match started.first_token.clone() {
        Some(t) => t,
        None => server.create_token(&started.admin, true).await?,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let listener = started.into_listener();
    let server_task = tokio::spawn(server.clone().serve(listener, wait_stop(stop_rx.clone())));
    let agent = AgentConfig {
        name: "demo-agent".into(),
        queue: "default".into(),
        slots: 2,
        work_dir: data_dir.join("agent"),
        hide_paths: vec![data_dir.clone()],
        sandbox: SandboxMode::Auto,
        stop_grace: Duration::from_secs(5),
        lease_wait_ms: 30_000,
        cache_bytes: None,
        executor: podder_core::ExecutorKind::Process,
        gpus: vec![],
        docker_user: "1000:1000".into(),
        default_image: super::agent::DEFAULT_IMAGE.into(),
        memory_bytes: None,
        venv_python: None,
    };
    let agent_task = tokio::spawn(podder_agent::run_agent(Client::new(&url, &token)?, agent, wait_stop(stop_rx)));
    println!("podder demo: server at {url}, data in {}", data_dir.display());

    let result = steps(&url, &token, &data_dir).await;
    let me = program();
    let log = crate::logging::log_file(&data_dir);
    match &result {
        Ok([train, eval]) if keep => {
            println!("\n== next: the server stays up until Ctrl-C; in another terminal:");
            println!("  export PODDER_SERVER={url} PODDER_TOKEN={token}");
            hints(&[
                (format!("{me} output {train}"), "what training left in /output: the model"),
                (format!("{me} logs {eval}"), "the evaluation's log"),
                (format!("{me} status {train}"), "a job's record: code, inputs, command, times"),
            ]);
            println!("(the server's log: {})", log.display());
            super::shutdown_signal().await;
        }
        Ok(_) => {
            println!("\n== next");
            hints(&[
                (format!("{me} demo --keep"), "the same, then its server stays up until Ctrl-C to look at the jobs"),
                (format!("{me} up"), "your own server and agent (they stay in the foreground)"),
                (format!("{me} init NAME"), "then, in your code's directory: link it to project NAME"),
                (format!("{me} run -- python3 train.py"), "and run it there"),
            ]);
        }
        Err(_) => {}
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(15), async {
        let _ = server_task.await;
        let _ = agent_task.await;
    })
    .await;
    // The last handle on the server: dropping it closes the object store,
    // which seals its open packs, so that must happen before the directory
    // goes (else the seal fails on the removed files and says so).
    drop(server);
    if result.is_err() {
        eprintln!("the demo's data directory and log are kept: {}", log.display());
    } else if temporary {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    result.map(|_| 0)
}

/// Prints commands, each with what it is for, aligned.
fn hints(lines: &[(String, &str)]) {
    let width = lines.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
    for (command, what) in lines {
        println!("  {command:<width$}   # {what}");
    }
}

/// How to name this program in a hint the user can paste: `podder` when
/// that is what `PATH` finds, else this executable's path (relative to the
/// current directory when under it, as after `cargo run`).
fn program() -> String {
    let Ok(exe) = std::env::current_exe() else { return "podder".into() };
    let on_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("podder")).find(|p| p.is_file()));
    let same = |p: &Path| std::fs::canonicalize(p).ok() == std::fs::canonicalize(&exe).ok();
    if on_path.as_deref().is_some_and(same) {
        return "podder".into();
    }
    let relative = std::env::current_dir().ok().and_then(|cwd| exe.strip_prefix(cwd).ok().map(Path::to_path_buf));
    relative.unwrap_or(exe).display().to_string()
}

/// Runs the two jobs; returns their refs.
async fn steps(url: &str, token: &str, data_dir: &Path) -> Result<[JobRef; 2]> {
    let client = Client::new(url, token)?;
    let me = client.whoami().await?.owner;
    let ctx = Ctx { client, me };
    let project = "demo".parse()?;
    if ctx.client.project(&ctx.me, &project).await.is_err() {
        ctx.client.create_project(&project, "podder's bundled example").await?;
    }
    let code = data_dir.join("demo-code");
    std::fs::create_dir_all(&code)?;
    std::fs::write(code.join("train.py"), TRAIN)?;
    std::fs::write(code.join("evaluate.py"), EVALUATE)?;
    std::fs::write(code.join("podder.yaml"), "project: demo\n")?;
    let report = super::run::upload_code(&ctx, code, 1 << 30).await?;

    println!("\n== training: python3 train.py (20 epochs of logistic regression)");
    let mut submit = SubmitJob {
        code: report.manifest,
        command: vec!["python3".into(), "train.py".into()],
        params: [("EPOCHS".to_string(), "20".to_string())].into(),
        message: Some("demo: train".into()),
        ..Default::default()
    };
    let train = run_job(&ctx, &project, &submit).await?;

    println!("\n== evaluating: python3 evaluate.py with {}'s output mounted at /model", train.job_ref);
    submit.command = vec!["python3".into(), "evaluate.py".into()];
    submit.params.clear();
    submit.data = vec![format!(
        "{}/{}#{}:/model",
        train.job_ref.owner.as_ref().unwrap_or(&ctx.me),
        project,
        train.job_ref.number
    )];
    submit.message = Some("demo: evaluate".into());
    let eval = run_job(&ctx, &project, &submit).await?;

    println!("\n== summary");
    for (what, j) in [("train", &train), ("evaluate", &eval)] {
        println!("{what:<9} {}  {}  in {}", j.job_ref, j.state, crate::display::runtime(j));
    }
    Ok([train.job_ref, eval.job_ref])
}

async fn run_job(ctx: &Ctx, project: &podder_core::Name, submit: &SubmitJob) -> Result<Job> {
    let job = ctx.client.submit(&ctx.me, project, submit).await?;
    println!("submitted {}", job.job_ref);
    let done = super::logs::follow(ctx, &job.job_ref).await?;
    if done.state != JobState::Succeeded {
        bail!("{} ended {} (its log is above)", done.job_ref, done.state);
    }
    Ok(done)
}
