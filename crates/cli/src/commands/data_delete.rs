//! `podder data delete NAME@N` deletes one version; `podder data delete NAME`
//! deletes the dataset with every version, after asking on a terminal (or
//! with `--yes`; not on a terminal and without it, nothing is deleted). What
//! was deleted is printed. The server refuses while a queued or running job
//! mounts what would go, and its message names the job.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Result, bail};

use super::data::{DatasetArg, no_dataset, resolve, short_name, version_name};
use crate::ctx::Ctx;
use crate::display;

pub async fn run(ctx: &Ctx, dataset: &str, yes: bool) -> Result<i32> {
    let d = DatasetArg::parse(ctx, dataset)?;
    if d.has_version {
        // Resolved first, so `@latest` deletes the version it named then, and
        // the output says which number that was.
        let v = resolve(ctx, &d).await?;
        ctx.client.delete_version(&v.owner, &v.dataset, v.version).await?;
        println!(
            "deleted {} ({}, {})",
            version_name(ctx, &v),
            display::count(v.files as u64, "file"),
            display::bytes(v.bytes)
        );
        println!("its chunks are freed by the next `podder admin gc` unless other versions share them");
        return Ok(0);
    }
    let versions = ctx.client.dataset_versions(&d.owner, &d.name).await.map_err(|e| match e.status() {
        Some(404) => no_dataset(ctx, &d),
        _ => e.into(),
    })?;
    let name = short_name(ctx, &d.owner, &d.name);
    let numbers: Vec<String> = versions.iter().map(|v| format!("@{}", v.version)).collect();
    let bytes: u64 = versions.iter().map(|v| v.bytes).sum();
    if !yes && !versions.is_empty() {
        let what = format!(
            "dataset {name} and all its {} ({}; {})",
            display::count(versions.len() as u64, "version"),
            numbers.join(", "),
            display::bytes(bytes)
        );
        if !confirm(&format!("delete {what}?"))? {
            if !std::io::stdin().is_terminal() {
                bail!(
                    "not deleting {what} without confirmation: pass --yes, or delete one version with \
                     `podder data delete {name}@N`"
                );
            }
            eprintln!("nothing was deleted");
            return Ok(1);
        }
    }
    ctx.client.delete_dataset(&d.owner, &d.name).await?;
    match versions.len() {
        0 => println!("deleted dataset {name} (it had no versions)"),
        n => println!(
            "deleted dataset {name} and its {n} version{} ({}; {} in all)",
            if n == 1 { "" } else { "s" },
            numbers.join(", "),
            display::bytes(bytes)
        ),
    }
    Ok(0)
}

/// Asks on the terminal; false (without asking) when stdin is not one.
fn confirm(question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_lowercase().as_str(), "y" | "yes"))
}
