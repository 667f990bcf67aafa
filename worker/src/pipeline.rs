//! Runs a job's steps in order, from a given step on.

use std::time::{Duration, Instant};

use tracing::{info, info_span, Instrument};

use crate::context::JobContext;
use crate::error::JobError;
use crate::steps::{Step, StepReport};

/// How the image was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Inside Ceph: snapshot, clone, flatten.
    Direct,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Direct => "direct",
        }
    }
}

#[derive(Debug, Clone)]
pub struct JobOutcome {
    pub method: Method,
    pub elapsed: Duration,
    /// Per step: what it did and how long it took.
    pub steps: Vec<(Step, StepReport, Duration)>,
}

/// Runs every step from `from` to the end. `after_step` is called after each completed step
/// (the consumer uses it to checkpoint).
pub async fn run_from(ctx: &JobContext, from: Step) -> Result<JobOutcome, JobError> {
    let started = Instant::now();
    let mut steps = Vec::new();
    for step in Step::ALL.into_iter().filter(|s| *s >= from) {
        let step_started = Instant::now();
        let report = step
            .ensure(ctx)
            .instrument(info_span!("step", step = step.name()))
            .await?;
        let took = step_started.elapsed();
        info!(
            step = step.name(),
            ?report,
            seconds = took.as_secs_f64(),
            "step complete"
        );
        steps.push((step, report, took));
    }
    Ok(JobOutcome {
        method: Method::Direct,
        elapsed: started.elapsed(),
        steps,
    })
}
