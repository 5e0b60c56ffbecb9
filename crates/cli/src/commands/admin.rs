//! `podder admin gc [--dry-run] [--json]`: frees the chunks and manifests
//! that no dataset version, job or output refers to any more.

use anyhow::Result;

use crate::args::AdminCmd;
use crate::ctx::Ctx;
use crate::display;

pub async fn run(ctx: &Ctx, cmd: AdminCmd) -> Result<i32> {
    match cmd {
        AdminCmd::Gc { dry_run, json } => gc(ctx, dry_run, json).await,
    }
}

async fn gc(ctx: &Ctx, dry_run: bool, json: bool) -> Result<i32> {
    let r = ctx.client.gc(dry_run).await.map_err(|e| match e.status() {
        Some(403) => anyhow::anyhow!("{e} (garbage collection needs an admin token)"),
        _ => e.into(),
    })?;
    if json {
        display::json(&r)?;
        return Ok(0);
    }
    let verb = if r.dry_run { "would free" } else { "freed" };
    println!(
        "{verb} {} chunk{} ({}) and {} manifest{}; {} chunk{} still in use",
        r.chunks_freed,
        if r.chunks_freed == 1 { "" } else { "s" },
        display::bytes(r.bytes_freed),
        r.manifests_freed,
        if r.manifests_freed == 1 { "" } else { "s" },
        r.chunks_kept,
        if r.chunks_kept == 1 { "" } else { "s" },
    );
    Ok(0)
}
