//! `podder output JOB [--download DIR] [--path P] [--json]`.

use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use podder_client::transfer;

use crate::ctx::Ctx;
use crate::{display, progress};

pub async fn run(
    ctx: &Ctx,
    job: &str,
    project: Option<&str>,
    download: Option<PathBuf>,
    path: Option<&str>,
    json: bool,
) -> Result<i32> {
    let r = ctx.job_ref(job, project)?;
    let j = ctx.client.job(&r, &ctx.me).await?;
    let id = j.output.ok_or_else(|| anyhow!("{} has no output yet (it is {})", j.job_ref, j.state))?;
    let mut manifest = ctx.client.manifest(&id).await?;
    if let Some(p) = path {
        manifest = manifest.subtree(p)?;
    }
    match download {
        Some(dest) => {
            if dest.exists() && std::fs::read_dir(&dest)?.next().is_some() {
                bail!("{} exists and is not empty: choose another directory", dest.display());
            }
            let cache = super::clone::chunk_cache()?;
            let bar = progress::TermBar::new("downloading output");
            transfer::fetch_into(&ctx.client, &manifest, &cache, &bar).await?;
            podder_store::materialize::materialize(cache.as_ref(), &manifest, &dest).await?;
            println!(
                "downloaded {} ({}) into {}",
                display::count(manifest.file_count() as u64, "file"),
                display::bytes(manifest.total_size()),
                dest.display()
            );
            super::clone::mark_download(&dest)?;
        }
        None if json => display::json(&manifest.entries)?,
        None => display::entries(&manifest.entries),
    }
    Ok(0)
}
