//! `podder data ls NAME[@N] [PATH] [--json]`: the entries of a version's
//! manifest, all of them or those under PATH, with their full paths.

use anyhow::{Result, bail};
use podder_core::mount::check_relative;
use podder_core::{Entry, EntryKind};

use super::data::{DatasetArg, resolve, version_name};
use crate::ctx::Ctx;
use crate::display;

pub async fn run(ctx: &Ctx, dataset: &str, path: Option<&str>, json: bool) -> Result<i32> {
    let d = DatasetArg::parse(ctx, dataset)?;
    let path = path.map(|p| p.trim_end_matches('/')).filter(|p| !p.is_empty() && *p != ".");
    let path = path.map(check_relative).transpose()?;
    let v = resolve(ctx, &d).await?;
    let manifest = ctx.client.manifest(&v.manifest).await?;
    let entries: Vec<Entry> = match &path {
        None => manifest.entries,
        Some(p) => {
            let under = format!("{p}/");
            let exact = manifest.entries.iter().find(|e| e.path == *p).cloned();
            match exact {
                Some(e) if !matches!(e.kind, EntryKind::Dir { .. }) => vec![e],
                Some(_) => manifest.entries.into_iter().filter(|e| e.path.starts_with(&under)).collect(),
                None => bail!(
                    "there is no '{p}' in {}: see `podder data ls {}`",
                    version_name(ctx, &v),
                    version_name(ctx, &v)
                ),
            }
        }
    };
    if json {
        display::json(&entries)?
    } else {
        display::entries(&entries)
    }
    Ok(0)
}
