//! `podder data delete NAME@N` deletes one version; `podder data delete NAME`
//! deletes the dataset with every version. No questions are asked; what was
//! deleted is printed. The server refuses while a queued or running job
//! mounts what would go, and its message names the job.

use anyhow::Result;

use super::data::{DatasetArg, no_dataset, resolve, short_name, version_name};
use crate::ctx::Ctx;
use crate::display;

pub async fn run(ctx: &Ctx, dataset: &str) -> Result<i32> {
    let d = DatasetArg::parse(ctx, dataset)?;
    if d.has_version {
        // Resolved first, so `@latest` deletes the version it named then, and
        // the output says which number that was.
        let v = resolve(ctx, &d).await?;
        ctx.client.delete_version(&v.owner, &v.dataset, v.version).await?;
        println!("deleted {} ({} files, {})", version_name(ctx, &v), v.files, display::bytes(v.bytes));
        println!("its chunks are freed by the next `podder admin gc` unless other versions share them");
        return Ok(0);
    }
    let versions = ctx.client.dataset_versions(&d.owner, &d.name).await.map_err(|e| match e.status() {
        Some(404) => no_dataset(ctx, &d),
        _ => e.into(),
    })?;
    ctx.client.delete_dataset(&d.owner, &d.name).await?;
    let name = short_name(ctx, &d.owner, &d.name);
    let numbers: Vec<String> = versions.iter().map(|v| format!("@{}", v.version)).collect();
    let bytes: u64 = versions.iter().map(|v| v.bytes).sum();
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
