//! `podder project create|list`.

use anyhow::Result;

use crate::args::ProjectCmd;
use crate::ctx::Ctx;
use crate::display;

pub async fn run(ctx: &Ctx, cmd: ProjectCmd) -> Result<i32> {
    match cmd {
        ProjectCmd::Create { name, description } => {
            let p = ctx.client.create_project(&name.parse()?, &description).await?;
            println!("created project {}/{}", p.owner, p.name);
        }
        ProjectCmd::List { json } => {
            let list = ctx.client.projects().await?;
            if json {
                display::json(&list)?;
            } else {
                let rows = list
                    .iter()
                    .map(|p| vec![format!("{}/{}", p.owner, p.name), p.jobs.to_string(), p.description.clone()])
                    .collect::<Vec<_>>();
                display::table(&["PROJECT", "JOBS", "DESCRIPTION"], &rows);
            }
        }
    }
    Ok(0)
}
