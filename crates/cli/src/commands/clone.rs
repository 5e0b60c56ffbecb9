//! `podder clone JOB [DIR]`: the job's code snapshot, as it was submitted.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use podder_client::transfer;
use podder_store::{BlobStore, LocalStore};

use crate::ctx::Ctx;
use crate::{config, progress};

/// The client's chunk cache, shared by downloads.
pub fn chunk_cache() -> Result<Arc<dyn BlobStore>> {
    Ok(Arc::new(LocalStore::open(config::cache_dir().join("chunks"))?))
}

pub async fn run(ctx: &Ctx, job: &str, dir: Option<PathBuf>) -> Result<i32> {
    let r = ctx.job_ref(job)?;
    let j = ctx.client.job(&r, &ctx.me).await?;
    let dest = dir.unwrap_or_else(|| PathBuf::from(format!("{}-{}", j.job_ref.project, j.job_ref.number)));
    if dest.exists() && std::fs::read_dir(&dest)?.next().is_some() {
        bail!("{} exists and is not empty: choose another directory", dest.display());
    }
    let bar = progress::TermBar::new("downloading code");
    let m = transfer::download_tree(&ctx.client, &j.spec.code, &chunk_cache()?, &dest, &bar).await?;
    println!("cloned {} ({} files) into {}", j.job_ref, m.file_count(), dest.display());
    Ok(0)
}
