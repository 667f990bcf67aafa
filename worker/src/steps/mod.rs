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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// `vms/<disk>@snapq-<image_id>` exists (and is protected, for clone v1 clusters).
    SnapshotSource,
    /// `images/<image_id>` exists, cloned from that snapshot.
    CloneToImages,
    /// The clone no longer depends on the instance disk.
    Flatten,
    /// The snapshot of the instance disk is gone.
    RemoveSourceSnapshot,
    /// `images/<image_id>@snap` exists and is protected, its location is registered, and the
    /// Glance image is `active`.
    PublishImage,
}

impl Step {
    pub const ALL: [Step; 5] = [
        Step::SnapshotSource,
        Step::CloneToImages,
        Step::Flatten,
        Step::RemoveSourceSnapshot,
        Step::PublishImage,
    ];

    /// The name used in logs, headers and the README.
    pub fn name(self) -> &'static str {
        match self {
            Step::SnapshotSource => "snapshot_source",
            Step::CloneToImages => "clone_to_images",
            Step::Flatten => "flatten",
            Step::RemoveSourceSnapshot => "remove_source_snapshot",
            Step::PublishImage => "publish_image",
        }
    }

    pub fn from_name(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Brings the world to this step's outcome.
    pub async fn ensure(self, ctx: &JobContext) -> Result<StepReport, JobError> {
        match self {
            Step::SnapshotSource => snapshot_source::ensure(ctx).await,
            Step::CloneToImages => clone_to_images::ensure(ctx).await,
            Step::Flatten => flatten::ensure(ctx).await,
            Step::RemoveSourceSnapshot => remove_source_snapshot::ensure(ctx).await,
            Step::PublishImage => publish_image::ensure(ctx).await,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_round_trip_in_order() {
        for (i, step) in Step::ALL.into_iter().enumerate() {
            assert_eq!(Step::from_name(step.name()), Some(step));
            if i > 0 {
                assert!(Step::ALL[i - 1] < step, "steps are ordered");
            }
        }
        assert_eq!(Step::from_name("nope"), None);
    }
}
