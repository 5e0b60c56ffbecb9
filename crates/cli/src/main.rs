//! The `podder` binary: parses the command line and hands each command to its
//! file in `commands/`. Kept thin on purpose.

mod args;
mod commands;
mod config;
mod ctx;
mod display;
mod logging;
mod progress;

use clap::Parser;

fn main() {
    let cli = args::Cli::parse();
    if let Some(problem) = logging::init(cli.verbose, commands::log_file(&cli.command).as_deref()) {
        eprintln!("podder: {problem}");
    }
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
