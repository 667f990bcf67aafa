//! Why a job failed, and what the worker should do about it.

use snapq_common::amqp::AmqpError;
use snapq_common::glance::GlanceError;
use snapq_common::message::MessageError;
use snapq_common::rbd::RbdError;
use uuid::Uuid;

/// What to do with a job that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// A passing problem (network, timeouts, Glance 5xx): try again later.
    Retry,
    /// The fast path cannot work here (permissions, Glance refusing the location): clean up
    /// and make the image by a full copy instead.
    Fallback,
    /// Nothing will make this job succeed as sent: clean up and park it for an operator.
    Park,
    /// The request names something snapq must not touch: answer the caller, park the job,
    /// and remove nothing but what this job itself made.
    Refuse,
}

/// A request snapq will not carry out, and why. Each message says what was found; "refusing
/// to touch" appears only where snapq indeed leaves the thing as it found it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("args.disk: pool '{pool}' is not an allowed source pool (allowed: {allowed}); refusing the request")]
    PoolNotAllowed { pool: String, allowed: String },
    #[error(
        "args.disk: pool '{pool}' is Glance's pool, which is never a source; refusing the request"
    )]
    GlancePool { pool: String },
    #[error("args.disk: '{name}' does not match the allowed disk names ({pattern}); refusing the request")]
    NameNotAllowed { name: String, pattern: String },
    #[error("Glance image {image_id} is owned by project {owner}, not by the request's project {project}; refusing to touch it")]
    OtherProject {
        image_id: Uuid,
        owner: String,
        project: String,
    },
    #[error("Glance image {image_id} is '{status}', not 'queued' and waiting for this snapshot; refusing to touch it")]
    ImageNotWaiting { image_id: Uuid, status: String },
    #[error("Glance image {image_id} has disk_format {disk_format}, but an RBD clone is raw data; refusing to touch it")]
    NotRaw { image_id: Uuid, disk_format: String },
    #[error("Glance image {image_id} already has a location snapq did not register for this job ({location}); refusing to touch it")]
    ForeignLocation { image_id: Uuid, location: String },
    #[error("{image} exists but carries no snapq mark ({found}); refusing to touch it")]
    Unmarked { image: String, found: String },
    #[error("{image} was made by snapq for {made_for}, not for {wanted}; refusing to touch it")]
    OtherJob {
        image: String,
        made_for: String,
        wanted: String,
    },
    #[error("Glance image {image_id} is active, but snapq cannot show it made that data from {disk}; refusing to touch it")]
    UnprovenData { image_id: Uuid, disk: String },
}

impl Refusal {
    /// Refusals about who asks for what (not about what exists): decided before snapq looks
    /// at Ceph, so the job has made nothing and another job of the same image may be running.
    /// Such a job must not clean up anything.
    pub fn is_about_the_request(&self) -> bool {
        matches!(
            self,
            Refusal::PoolNotAllowed { .. }
                | Refusal::GlancePool { .. }
                | Refusal::NameNotAllowed { .. }
                | Refusal::OtherProject { .. }
        )
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    #[error("invalid request: {0}")]
    Invalid(#[from] MessageError),
    #[error("ceph: {0}")]
    Ceph(#[from] RbdError),
    #[error("glance: {0}")]
    Glance(#[from] GlanceError),
    #[error("rabbitmq: {0}")]
    Amqp(#[from] AmqpError),
    #[error("the instance disk {disk} does not exist")]
    SourceMissing { disk: String },
    #[error("Glance image {image_id} no longer exists (deleted while the snapshot was made)")]
    ImageGone { image_id: Uuid },
    #[error("Glance image {image_id} became '{status}' while snapq was making it")]
    ImageConflict { image_id: Uuid, status: String },
    #[error("the instance disk is in cluster {disk_fsid} but Glance stores images in cluster {store_fsid}")]
    DifferentCluster {
        disk_fsid: String,
        store_fsid: String,
    },
    #[error("flatten still running ({percent}% done)")]
    FlattenInProgress { percent: u8 },
    #[error("Glance is still importing the location (task {task})")]
    ImportInProgress { task: String },
    #[error("Glance's import of the location failed (task {task}): {message}")]
    ImportFailed { task: String, message: String },
    #[error("the job's lease was lost to another worker")]
    LeaseLost,
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
}

impl JobError {
    pub fn disposition(&self) -> Disposition {
        match self {
            JobError::Ceph(e) if e.is_transient() => Disposition::Retry,
            JobError::Ceph(e) if e.is_fallback_reason() => Disposition::Fallback,
            JobError::Glance(e) if e.refuses_location() => Disposition::Fallback,
            JobError::DifferentCluster { .. } => Disposition::Fallback,
            JobError::Glance(e) if e.is_transient() => Disposition::Retry,
            JobError::Amqp(_)
            | JobError::FlattenInProgress { .. }
            | JobError::ImportInProgress { .. }
            | JobError::ImportFailed { .. }
            | JobError::LeaseLost => Disposition::Retry,
            JobError::Refused(_) => Disposition::Refuse,
            JobError::Ceph(_)
            | JobError::Glance(_)
            | JobError::Invalid(_)
            | JobError::SourceMissing { .. }
            | JobError::ImageGone { .. }
            | JobError::ImageConflict { .. } => Disposition::Park,
        }
    }

    /// Whether the failed job must leave Ceph exactly as it is, its own leftovers included
    /// (see [`Refusal::is_about_the_request`]).
    pub fn must_not_clean_up(&self) -> bool {
        matches!(self, JobError::Refused(refusal) if refusal.is_about_the_request())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceph_errors_classify_by_errno() {
        let eperm = JobError::from(RbdError::new("clone", "images/x", libc_eperm()));
        assert_eq!(eperm.disposition(), Disposition::Fallback);
        let timeout = JobError::from(RbdError::new("open", "vms/x", 110));
        assert_eq!(timeout.disposition(), Disposition::Retry);
        let missing = JobError::SourceMissing {
            disk: "vms/x".into(),
        };
        assert_eq!(missing.disposition(), Disposition::Park);
    }

    fn libc_eperm() -> i32 {
        1
    }
}
