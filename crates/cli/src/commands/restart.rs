//! `podder restart JOB`: a new job with the same code, inputs and environment.

use anyhow::Result;

use crate::ctx::Ctx;
use crate::display;

pub async fn run(ctx: &Ctx, job: &str, project: Option<&str>, follow: bool, json: bool) -> Result<i32> {
    let r = ctx.job_ref(job, project)?;
    let j = ctx.client.restart(&r, &ctx.me).await?;
    if json {
        display::json(&j)?;
    } else {
        println!("{}", j.job_ref);
        eprintln!("restarted {} as {}", r, j.job_ref);
    }
    if follow {
        let done = super::logs::follow(ctx, &j.job_ref).await?;
        return Ok(super::logs::exit_code(&done));
    }
    Ok(0)
}
