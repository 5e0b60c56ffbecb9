//! Agents as last seen: their queue, their inventory, and the GPUs their
//! leased jobs hold.

use std::collections::BTreeMap;

use podder_core::Inventory;
use podder_core::api::AgentInfo;
use sqlx::Row;

use super::SqliteStore;
use crate::Result;

pub(super) async fn agent_seen(
    s: &SqliteStore,
    name: &str,
    queue: &str,
    inventory: &Inventory,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO agents (name, queue, inventory, last_seen) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO UPDATE SET queue = excluded.queue, inventory = excluded.inventory,
                                          last_seen = MAX(agents.last_seen, excluded.last_seen)",
    )
    .bind(name)
    .bind(queue)
    .bind(serde_json::to_string(inventory)?)
    .bind(now)
    .execute(&s.writer)
    .await?;
    Ok(())
}

pub(super) async fn agent_alive(s: &SqliteStore, name: &str, now: i64) -> Result<()> {
    sqlx::query("UPDATE agents SET last_seen = $2 WHERE name = $1 AND last_seen < $2")
        .bind(name)
        .bind(now)
        .execute(&s.writer)
        .await?;
    Ok(())
}

pub(super) async fn list_agents(s: &SqliteStore) -> Result<Vec<AgentInfo>> {
    let rows =
        sqlx::query("SELECT name, queue, inventory, last_seen FROM agents ORDER BY name").fetch_all(&s.reader).await?;
    let held = sqlx::query(
        "SELECT agent, gpus FROM jobs
         WHERE agent IS NOT NULL AND state IN ('assigned', 'preparing', 'running')",
    )
    .fetch_all(&s.reader)
    .await?;
    let mut in_use: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for row in held {
        let agent: String = row.try_get("agent")?;
        let gpus: String = row.try_get("gpus")?;
        in_use.entry(agent).or_default().extend(serde_json::from_str::<Vec<u32>>(&gpus)?);
    }
    rows.iter()
        .map(|row| {
            let name: String = row.try_get("name")?;
            let inventory: String = row.try_get("inventory")?;
            let mut gpus_in_use = in_use.remove(&name).unwrap_or_default();
            gpus_in_use.sort_unstable();
            Ok(AgentInfo {
                name,
                queue: row.try_get("queue")?,
                inventory: serde_json::from_str(&inventory)?,
                last_seen: row.try_get("last_seen")?,
                gpus_in_use,
            })
        })
        .collect()
}
