//! `podder data upload NAME DIR [--message M] [--json]`: scan the directory
//! and upload what the server lacks while the scan goes on, commit the
//! manifest, and make it the dataset's next version (creating the dataset
//! if it does not exist). Interrupted, it is simply run again: chunks that
//! arrived are not sent twice, and no version exists until the manifest is
//! committed.
//!
//! Also home of [`scan_and_upload`], which `podder run` uses for code.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use podder_client::{Client, ClientError, transfer};
use podder_core::refs::Version;
use podder_store::scan::{ScanOptions, ScannedTree};
use podder_store::statcache;

use super::data::{DatasetArg, ensure, find, version_name};
use crate::ctx::Ctx;
use crate::{config, display, progress};

pub async fn run(
    ctx: &Ctx,
    name: &str,
    dir: PathBuf,
    message: Option<String>,
    rehash: bool,
    over_http: bool,
    json: bool,
) -> Result<i32> {
    let d = DatasetArg::parse_name(ctx, name)?;
    if !dir.is_dir() {
        bail!("{} is not a directory: give the directory to upload", dir.display());
    }
    // Looked up before the scan, so a name that cannot be used fails fast;
    // created only after the scan, so a tree with problems leaves no trace.
    let existing = find(ctx, &d).await?;
    if existing.is_none() && d.owner != ctx.me {
        return Err(super::data::no_dataset(ctx, &d));
    }
    // Datasets take everything in the directory (but .git): ignore files
    // are for code.
    let opts = ScanOptions { respect_ignore: false, max_bytes: None, threads: 0 };
    let label = format!("uploading {}", d.short(ctx));
    let client = if over_http { ctx.client.clone().with_local_ingest(false) } else { ctx.client.clone() };
    let (tree, report) = scan_and_upload(&client, &dir, &opts, &label, !rehash).await?;
    let ds = ensure(ctx, &d, existing).await?;
    let manifest = report.manifest.expect("a finished upload has a manifest");
    // The same tree as the newest version makes no new version.
    let latest = match ds.latest {
        Some(n) => Some(ctx.client.dataset_version(&d.owner, &d.name, Version::Number(n)).await?),
        None => None,
    };
    let (v, unchanged) = match latest {
        Some(v) if v.manifest == manifest => (v, true),
        _ => (ctx.client.create_version(&d.owner, &d.name, manifest, message).await?, false),
    };
    if json {
        display::json(&serde_json::json!({ "version": v, "unchanged": unchanged, "upload": report, "scan": {
            "files": tree.stats.files,
            "cached_files": tree.stats.cached_files,
            "hashed_files": tree.stats.hashed_files,
            "hashed_bytes": tree.stats.hashed_bytes,
        }}))?;
    } else if unchanged {
        println!(
            "{} is unchanged: {} holds exactly its {} ({}); no new version was made",
            version_name(ctx, &v),
            dir.display(),
            display::count(report.files as u64, "file"),
            display::bytes(report.bytes_total)
        );
    } else {
        let local = match report.local_files {
            0 => String::new(),
            n => format!(
                "; the server read {n} large file{} ({}) from this machine itself",
                if n == 1 { "" } else { "s" },
                display::bytes(report.local_bytes)
            ),
        };
        println!(
            "uploaded {}: {}, {} (sent {} of {}, {}{local})",
            version_name(ctx, &v),
            display::count(report.files as u64, "file"),
            display::bytes(report.bytes_total),
            report.chunks_sent,
            display::count(report.chunks_total as u64, "chunk"),
            display::bytes(report.bytes_sent)
        );
    }
    Ok(0)
}

/// Scans `dir` (through the local stat cache when `use_cache`) and uploads
/// it as the scan goes, with a progress bar on a terminal; commits the
/// manifest. A tree with problems uploads nothing and names them all.
pub async fn scan_and_upload(
    client: &Client,
    dir: &Path,
    opts: &ScanOptions,
    label: &str,
    use_cache: bool,
) -> Result<(ScannedTree, transfer::UploadReport)> {
    let cache = if use_cache { statcache::cache_file(&config::cache_dir().join("stat"), dir).ok() } else { None };
    let bar = Arc::new(progress::TermBar::new(label));
    match transfer::upload_dir(client, dir, opts, cache, bar).await {
        Ok(done) => Ok(done),
        Err(ClientError::Scan(e)) => Err(e).with_context(|| format!("uploading {}", dir.display())),
        Err(e) => Err(e.into()),
    }
}
