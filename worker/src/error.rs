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
    #[error("Glance image {image_id} is '{status}' with other data; refusing to touch it")]
    ImageConflict { image_id: Uuid, status: String },
    #[error(
        "Glance image {image_id} expects disk_format '{disk_format}', but an RBD clone is raw"
    )]
    NotRaw { image_id: Uuid, disk_format: String },
    #[error("the instance disk is in cluster {disk_fsid} but Glance stores images in cluster {store_fsid}")]
    DifferentCluster {
        disk_fsid: String,
        store_fsid: String,
    },
    #[error("flatten still running ({percent}% done)")]
    FlattenInProgress { percent: u8 },
    #[error("the job's lease was lost to another worker")]
    LeaseLost,
    #[error(
        "{image} already exists and is not a clone of {expected_parent}; refusing to touch it"
    )]
    ForeignImage {
        image: String,
        expected_parent: String,
    },
}

impl JobError {
    pub fn disposition(&self) -> Disposition {
        match self {
            JobError::Ceph(e) if e.is_transient() => Disposition::Retry,
            JobError::Ceph(e) if e.is_fallback_reason() => Disposition::Fallback,
            JobError::Glance(e) if e.refuses_location() => Disposition::Fallback,
            JobError::DifferentCluster { .. } => Disposition::Fallback,
            JobError::Glance(e) if e.is_transient() => Disposition::Retry,
            JobError::Amqp(_) | JobError::FlattenInProgress { .. } | JobError::LeaseLost => {
                Disposition::Retry
            }
            JobError::Ceph(_)
            | JobError::Glance(_)
            | JobError::Invalid(_)
            | JobError::SourceMissing { .. }
            | JobError::NotRaw { .. }
            | JobError::ImageGone { .. }
            | JobError::ImageConflict { .. }
            | JobError::ForeignImage { .. } => Disposition::Park,
        }
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
