//! Pipelines, purely: the pipeline file and its validation, the DAG's state
//! machine, trigger rules, retries, the cache key of a step, and cron
//! schedules. No I/O and no clock: every function takes `now` (Unix ms).
//!
//! The server's scheduler is a thin layer over this crate: it loads a run's
//! state, calls [`dag::decide`], carries out the actions (creating jobs,
//! persisting every transition), and calls [`dag::on_job_end`] when a step's
//! job ends.

pub mod cron;
pub mod dag;
pub mod spec;
mod validate;

pub use dag::{Action, InputSource, ResolvedInput, RunOutcome, RunState, StepRun, StepState, Verdict};
pub use spec::{Known, NoTasks, PipelineSpec, Problems, Schedule, StepInput, StepSpec, TriggerRule};

#[cfg(test)]
mod tests;
