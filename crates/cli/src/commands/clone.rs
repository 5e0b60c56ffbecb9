//! `podder clone JOB [DIR]`: the job's code snapshot, as it was submitted.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use podder_client::transfer;
use podder_store::{BlobStore, LocalStore};

use crate::config::ProjectFile;
use crate::ctx::Ctx;
use crate::{config, display, progress};

/// The client's chunk cache, shared by downloads.
pub fn chunk_cache() -> Result<Arc<dyn BlobStore>> {
    Ok(Arc::new(LocalStore::open(config::cache_dir().join("chunks"))?))
}

pub async fn run(ctx: &Ctx, job: &str, project: Option<&str>, dir: Option<PathBuf>) -> Result<i32> {
    let r = ctx.job_ref(job, project)?;
    let j = ctx.client.job(&r, &ctx.me).await?;
    let dest = dir.unwrap_or_else(|| PathBuf::from(format!("{}-{}", j.job_ref.project, j.job_ref.number)));
    if dest.exists() && std::fs::read_dir(&dest)?.next().is_some() {
        bail!("{} exists and is not empty: choose another directory", dest.display());
    }
    let bar = progress::TermBar::new("downloading code");
    let m = transfer::download_tree(&ctx.client, &j.spec.code, &chunk_cache()?, &dest, &bar).await?;
    println!("cloned {} ({}) into {}", j.job_ref, display::count(m.file_count() as u64, "file"), dest.display());
    mark_download(&dest)?;
    Ok(0)
}

/// A directory podder downloaded into that lies inside a project's
/// directory gets a [`DOWNLOAD_MARKER`] file, so that `podder run` leaves
/// it out of that project's code uploads (the scan skips directories that
/// hold one, below its root); says so on stderr. Elsewhere nothing is
/// written, so a download is an exact copy.
///
/// [`DOWNLOAD_MARKER`]: podder_store::scan::DOWNLOAD_MARKER
pub fn mark_download(dest: &std::path::Path) -> Result<()> {
    let dest = std::fs::canonicalize(dest)?;
    let Some(parent) = dest.parent() else { return Ok(()) };
    let Some((_, project_dir)) = ProjectFile::find(parent)? else { return Ok(()) };
    std::fs::write(
        dest.join(podder_store::scan::DOWNLOAD_MARKER),
        "podder downloaded this directory: `podder run` leaves it out of code uploads.\n\
         Delete this file to upload it with the code.\n",
    )?;
    let shown = dest.strip_prefix(&project_dir).unwrap_or(&dest);
    eprintln!(
        "note: {} is inside the project directory {}; `podder run` leaves it out of code uploads \
         (delete {}/{} to include it)",
        shown.display(),
        project_dir.display(),
        shown.display(),
        podder_store::scan::DOWNLOAD_MARKER
    );
    Ok(())
}
