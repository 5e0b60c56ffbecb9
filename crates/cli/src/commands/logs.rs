//! `podder logs JOB [-f]`, and following a job until it ends.

use anyhow::Result;
use podder_core::api::{Job, Stream};
use podder_core::{JobRef, JobState};

use crate::ctx::Ctx;

pub async fn run(ctx: &Ctx, job: &str, project: Option<&str>, follow_it: bool) -> Result<i32> {
    let r = ctx.job_ref(job, project)?;
    if follow_it {
        let done = follow(ctx, &r).await?;
        return Ok(exit_code(&done));
    }
    let mut from = 0;
    loop {
        let batch = ctx.client.logs(&r, &ctx.me, from, 0).await?;
        if batch.lines.is_empty() {
            break;
        }
        from = print_lines(&batch.lines);
    }
    Ok(0)
}

fn print_lines(lines: &[podder_core::api::LogLine]) -> u64 {
    print_lines_to(lines, false)
}

fn print_lines_to(lines: &[podder_core::api::LogLine], all_to_stderr: bool) -> u64 {
    use std::io::Write;
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    let mut next = 0;
    for l in lines {
        let _ = match l.stream {
            Stream::Stdout if all_to_stderr => writeln!(err, "{}", l.text),
            Stream::Stdout => writeln!(out, "{}", l.text),
            Stream::Stderr => writeln!(err, "{}", l.text),
            Stream::System => writeln!(err, "[podder] {}", l.text),
        };
        next = l.seq + 1;
    }
    let _ = out.flush();
    next
}

/// Prints the job's lines as they arrive until it ends; returns the ended job.
pub async fn follow(ctx: &Ctx, r: &JobRef) -> Result<Job> {
    follow_to(ctx, r, false).await
}

/// [`follow`], optionally with the job's stdout on stderr too (when the
/// command's own stdout is for `--json`).
pub async fn follow_to(ctx: &Ctx, r: &JobRef, all_to_stderr: bool) -> Result<Job> {
    let mut from = 0;
    loop {
        let batch = ctx.client.logs(r, &ctx.me, from, 25_000).await?;
        if !batch.lines.is_empty() {
            from = print_lines_to(&batch.lines, all_to_stderr);
        }
        if batch.done {
            let job = ctx.client.job(r, &ctx.me).await?;
            if job.state != JobState::Succeeded {
                let why = job.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
                eprintln!("{} {}{why}", job.job_ref, job.state);
            }
            return Ok(job);
        }
    }
}

/// The exit code a following command returns for an ended job.
pub fn exit_code(job: &Job) -> i32 {
    match job.state {
        JobState::Succeeded => 0,
        JobState::Failed => job.exit_code.filter(|c| *c != 0).unwrap_or(1),
        JobState::Stopped => 130,
        _ => 1,
    }
}
