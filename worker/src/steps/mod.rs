//! The five steps of a direct snapshot, in order. Each *ensures* its outcome: it looks at
//! Ceph and Glance first and acts only if the outcome is missing, so running a step twice
//! changes nothing.

mod clone_to_images;
mod flatten;
mod publish_image;
mod remove_source_snapshot;
mod snapshot_source;

use crate::context::JobContext;
use crate::error::JobError;

pub use snapq_common::job::Step;

/// Brings the world to `step`'s outcome.
pub async fn ensure(step: Step, ctx: &JobContext) -> Result<StepReport, JobError> {
    match step {
        Step::SnapshotSource => snapshot_source::ensure(ctx).await,
        Step::CloneToImages => clone_to_images::ensure(ctx).await,
        Step::Flatten => flatten::ensure(ctx).await,
        Step::RemoveSourceSnapshot => remove_source_snapshot::ensure(ctx).await,
        Step::PublishImage => publish_image::ensure(ctx).await,
    }
}

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepReport {
    /// The outcome was missing and the step made it.
    Done,
    /// The outcome was already there (a retry or a duplicate); nothing changed.
    AlreadyDone,
}

impl StepReport {
    pub fn name(self) -> &'static str {
        match self {
            StepReport::Done => "done",
            StepReport::AlreadyDone => "already-done",
        }
    }
}
