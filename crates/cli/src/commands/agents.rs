//! `podder agents`: the agents the server has seen, with what they offer.

use anyhow::Result;

use crate::ctx::Ctx;
use crate::display;

pub async fn run(ctx: &Ctx, json: bool) -> Result<i32> {
    let agents = ctx.client.list_agents().await?;
    if json {
        return display::json(&agents).map(|_| 0);
    }
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            let inv = &a.inventory;
            let gpus = if inv.gpus.is_empty() {
                "-".to_string()
            } else {
                let idx: Vec<String> = inv.gpus.iter().map(|g| g.index.to_string()).collect();
                format!("{} ({} in use)", idx.join(","), a.gpus_in_use.len())
            };
            let executor = inv.executor.map(|e| format!("{e:?}").to_lowercase()).unwrap_or_else(|| "-".into());
            vec![
                a.name.clone(),
                a.queue.clone(),
                executor,
                inv.slots.to_string(),
                gpus,
                display::bytes(inv.memory_bytes),
                display::ago(a.last_seen),
            ]
        })
        .collect();
    display::table(&["NAME", "QUEUE", "EXECUTOR", "SLOTS", "GPUS", "MEMORY", "SEEN"], &rows);
    Ok(0)
}
