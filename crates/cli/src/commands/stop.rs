//! `podder stop JOB [--project P]`.

use anyhow::Result;

use crate::ctx::Ctx;

pub async fn run(ctx: &Ctx, job: &str, project: Option<&str>) -> Result<i32> {
    let r = ctx.job_ref(job, project)?;
    let j = ctx.client.stop(&r, &ctx.me).await?;
    if j.state.is_terminal() {
        println!("{} {}", j.job_ref, j.state);
    } else {
        println!("{} stopping", j.job_ref);
    }
    Ok(0)
}
