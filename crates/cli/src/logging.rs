//! Where tracing goes. A command's own output (stdout, and errors on
//! stderr) is for the user; tracing is the log. Commands that run a server or
//! an agent (`up`, `server`, `agent`, `demo`) write it to a log file
//! (`<data dir>/logs/podder.log`; an agent alone, under its work directory);
//! it also goes to stderr with `-v` or when `PODDER_LOG` / `RUST_LOG` is set.
//! Client commands log nothing unless one of those asks. No ANSI escapes
//! where the target is not a terminal (never in the file).

use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// What the log shows when neither `PODDER_LOG` nor `RUST_LOG` says.
const DEFAULT_FILTER: &str = "warn,podder=info,podder_server=info,podder_agent=info";

/// The log file under a data (or work) directory.
pub fn log_file(dir: &Path) -> PathBuf {
    dir.join("logs").join("podder.log")
}

/// Installs the subscriber: to `file` when given (created with its
/// directory, appended to), and to stderr when `verbose` or a filter
/// variable is set. Returns an error message to show when the file cannot
/// be opened (the command goes on, logging to stderr instead).
pub fn init(verbose: bool, file: Option<&Path>) -> Option<String> {
    let from_env = ["PODDER_LOG", "RUST_LOG"].into_iter().find_map(|var| {
        let value = std::env::var(var).ok().filter(|v| !v.trim().is_empty())?;
        Some(EnvFilter::try_new(&value).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER)))
    });
    let env_set = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(DEFAULT_FILTER));
    let (opened, problem) = match file.map(open) {
        Some(Ok(f)) => (Some(f), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    let to_stderr = verbose || env_set || problem.is_some();
    if opened.is_none() && !to_stderr {
        return None;
    }
    let file_layer =
        opened.map(|f| tracing_subscriber::fmt::layer().with_writer(Mutex::new(f)).with_ansi(false).with_target(false));
    let stderr_layer = to_stderr.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
    });
    let _ = tracing_subscriber::registry().with(filter).with(file_layer).with(stderr_layer).try_init();
    problem
}

fn open(path: &Path) -> Result<File, String> {
    let opened = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| OpenOptions::new().create(true).append(true).open(path));
    opened.map_err(|e| format!("cannot open the log file {}: {e}; logging to stderr", path.display()))
}
