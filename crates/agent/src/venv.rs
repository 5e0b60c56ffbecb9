//! The virtual environments of requirement environments (process
//! executor): one per requirements hash under `work_dir/envs/<hash>/`,
//! made once and used by every later job that names the same requirements.
//!
//! A venv is made in `envs/.tmp-<hash>-<pid>/` (`python3 -m venv`, then
//! `pip install -r requirements.txt` unless the requirements are empty),
//! its scripts' paths are rewritten to the final place, and it is renamed
//! into place: a venv at its final path is always complete. A per-hash lock
//! makes concurrent jobs needing the same venv build it once. Leftover
//! temporary venvs of a crashed agent are removed at start.
//!
//! The venv is bound read-only into the job's sandbox at the same path
//! (the work directory itself stays hidden); the job gets its `bin` first
//! on `PATH` and `VIRTUAL_ENV` set.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::logs::LogSink;
use crate::prepare::remove_tree;
use crate::sandbox::JOB_PATH;

/// A marker written last into a finished venv.
const READY: &str = ".podder-ready";

pub(crate) struct Venvs {
    root: PathBuf,
    python: PathBuf,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Venvs {
    /// Opens `work_dir/envs`, removing unfinished venvs. Blocking (briefly).
    pub(crate) fn open(work_dir: &Path, python: Option<PathBuf>) -> anyhow::Result<Venvs> {
        let root = work_dir.join("envs");
        std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
        for entry in std::fs::read_dir(&root)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = remove_tree(&entry.path());
            }
        }
        let python = python.unwrap_or_else(|| {
            let system = PathBuf::from("/usr/bin/python3");
            if system.exists() { system } else { PathBuf::from("python3") }
        });
        Ok(Venvs { root, python, locks: Mutex::new(HashMap::new()) })
    }

    /// The venv of `requirements` (whose hash is `hash`), made first when
    /// missing; pip's output goes to the job's log. Returns its path.
    pub(crate) async fn ensure(&self, hash: &str, requirements: &str, log: &LogSink) -> anyhow::Result<PathBuf> {
        let dest = self.root.join(hash);
        if dest.join(READY).is_file() {
            log.system(format!("environment: virtual environment {} (cached)", &hash[..12])).await;
            return Ok(dest);
        }
        let lock = self.locks.lock().expect("venv locks").entry(hash.to_string()).or_default().clone();
        let res = async {
            let _guard = lock.lock().await;
            if dest.join(READY).is_file() {
                log.system(format!("environment: virtual environment {} (cached)", &hash[..12])).await;
                return Ok(dest.clone());
            }
            log.system(format!("environment: making virtual environment {}", &hash[..12])).await;
            let tmp = self.root.join(format!(".tmp-{hash}-{}", std::process::id()));
            let made = self.make(&tmp, &dest, requirements, log).await;
            if let Err(e) = made {
                let t = tmp.clone();
                let _ = tokio::task::spawn_blocking(move || remove_tree(&t)).await;
                return Err(e);
            }
            if dest.exists() {
                // An unfinished one (no marker) from before: replace it.
                remove_tree(&dest)?;
            }
            std::fs::rename(&tmp, &dest).with_context(|| format!("cannot move the venv to {}", dest.display()))?;
            log.system(format!("environment: virtual environment {} is ready", &hash[..12])).await;
            Ok(dest.clone())
        }
        .await;
        drop(lock);
        self.locks.lock().expect("venv locks").retain(|_, l| Arc::strong_count(l) > 1);
        res
    }

    async fn make(&self, tmp: &Path, dest: &Path, requirements: &str, log: &LogSink) -> anyhow::Result<()> {
        if tmp.exists() {
            remove_tree(tmp)?;
        }
        let mut venv = Command::new(&self.python);
        venv.arg("-m").arg("venv").arg(tmp);
        run_logged(venv, log).await.with_context(|| format!("{} -m venv failed", self.python.display()))?;
        if has_requirements(requirements) {
            let file = tmp.join("requirements.txt");
            std::fs::write(&file, requirements)?;
            let mut pip = Command::new(tmp.join("bin/python"));
            pip.args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-r"]).arg(&file);
            run_logged(pip, log).await.context("pip install -r requirements.txt failed (its output is in the log)")?;
        }
        relocate(tmp, dest)?;
        std::fs::write(tmp.join(READY), "")?;
        Ok(())
    }
}

/// Whether a requirements text names anything (not only blanks and comments).
pub(crate) fn has_requirements(text: &str) -> bool {
    text.lines().map(|l| l.split('#').next().unwrap_or("").trim()).any(|l| !l.is_empty())
}

/// The variables a job using the venv at `venv` gets.
pub(crate) fn venv_env(venv: &Path) -> Vec<(String, String)> {
    let v = venv.to_string_lossy().into_owned();
    vec![("PATH".into(), format!("{v}/bin:{JOB_PATH}")), ("VIRTUAL_ENV".into(), v)]
}

/// Runs a command with its stdout and stderr as system lines of the log.
async fn run_logged(mut cmd: Command, log: &LogSink) -> anyhow::Result<()> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    cmd.env("PIP_DISABLE_PIP_VERSION_CHECK", "1").env("PYTHONUNBUFFERED", "1");
    let mut child = cmd.spawn().with_context(|| format!("cannot run {:?}", cmd.as_std().get_program()))?;
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(forward(out, log.clone())));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(forward(err, log.clone())));
    }
    let status = child.wait().await?;
    for r in readers {
        let _ = r.await;
    }
    anyhow::ensure!(status.success(), "it ended with {status}");
    Ok(())
}

async fn forward(r: impl tokio::io::AsyncRead + Unpin, log: LogSink) {
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(l)) = lines.next_line().await {
        log.system(l).await;
    }
}

/// Rewrites the venv's absolute paths (script shebangs, activate scripts,
/// `pyvenv.cfg` prompts) from where it was made to where it will live.
fn relocate(from: &Path, to: &Path) -> anyhow::Result<()> {
    let (from_s, to_s) = (from.to_string_lossy().into_owned(), to.to_string_lossy().into_owned());
    for entry in std::fs::read_dir(from.join("bin"))? {
        let path = entry?.path();
        let meta = std::fs::symlink_metadata(&path)?;
        if !meta.is_file() || meta.len() > 1 << 20 {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        if text.contains(&from_s) {
            std::fs::write(&path, text.replace(&from_s, &to_s))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_requirements() {
        assert!(!has_requirements(""));
        assert!(!has_requirements("# just a comment\n\n   \n"));
        assert!(has_requirements("numpy==2.0 # pinned\n"));
    }
}
