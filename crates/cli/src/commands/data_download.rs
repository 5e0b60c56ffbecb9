//! `podder data download NAME[@N] DIR [--path P]`: a version's tree (or one
//! directory of it) written into a new or empty directory, through the
//! client's chunk cache, so chunks already downloaded are not fetched again.

use std::path::PathBuf;

use anyhow::{Result, bail};
use podder_client::transfer;

use super::data::{DatasetArg, resolve, version_name};
use crate::ctx::Ctx;
use crate::{display, progress};

pub async fn run(ctx: &Ctx, dataset: &str, dest: PathBuf, path: Option<&str>) -> Result<i32> {
    let d = DatasetArg::parse(ctx, dataset)?;
    if dest.exists() && (!dest.is_dir() || std::fs::read_dir(&dest)?.next().is_some()) {
        bail!("{} exists and is not an empty directory: choose another directory", dest.display());
    }
    let v = resolve(ctx, &d).await?;
    let mut manifest = ctx.client.manifest(&v.manifest).await?;
    if let Some(p) = path.map(|p| p.trim_end_matches('/')).filter(|p| !p.is_empty() && *p != ".") {
        manifest = manifest.subtree(p)?;
    }
    let cache = super::clone::chunk_cache()?;
    let ids = manifest.chunk_ids();
    let mut cached = 0usize;
    for id in &ids {
        if cache.has_chunk(*id).await? {
            cached += 1;
        }
    }
    let bar = progress::TermBar::new(&format!("downloading {}", version_name(ctx, &v)));
    let fetched = transfer::fetch_into(&ctx.client, &manifest, &cache, &bar).await?;
    podder_store::materialize::materialize(cache.as_ref(), &manifest, &dest).await?;
    let source = match (cached, ids.len() - cached) {
        (_, 0) => format!("fetched {}: all from the local cache", display::bytes(fetched)),
        (0, _) => format!("fetched {}", display::bytes(fetched)),
        (c, _) => {
            format!("fetched {}; {} from the local cache", display::bytes(fetched), display::count(c as u64, "chunk"))
        }
    };
    println!(
        "downloaded {}: {}, {} into {} ({source})",
        version_name(ctx, &v),
        display::count(manifest.file_count() as u64, "file"),
        display::bytes(manifest.total_size()),
        dest.display(),
    );
    Ok(0)
}
