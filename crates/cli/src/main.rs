//! The `podder` binary: parses the command line and hands each command to its
//! file in `commands/`. Kept thin on purpose.

mod args;
mod commands;
mod config;
mod ctx;
mod display;
mod progress;

use clap::Parser;

fn main() {
    let cli = args::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("PODDER_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,podder=info,podder_server=info,podder_agent=info")
    });
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let code = match runtime.block_on(commands::dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(code);
}
