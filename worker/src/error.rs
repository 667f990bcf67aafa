//! Why a job failed, and what the worker should do about it.

use snapq_common::amqp::AmqpError;
use snapq_common::glance::GlanceError;
use snapq_common::message::MessageError;
use snapq_common::rbd::{RbdError, RbdErrorKind};
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
    /// The owner is not named: it is another tenant's.
    #[error("Glance image {image_id} is not owned by the request's project {project}; refusing to touch it")]
    OtherProject { image_id: Uuid, project: String },
    #[error("Glance image {image_id} is '{status}', not 'queued' and waiting for this snapshot; refusing to touch it")]
    ImageNotWaiting { image_id: Uuid, status: String },
    #[error("Glance image {image_id} has disk_format {disk_format}, but an RBD clone is raw data; refusing to touch it")]
    NotRaw { image_id: Uuid, disk_format: String },
    /// Only the location's scheme is said: its address (and any credentials in it) may be
    /// another tenant's. Make it with [`Refusal::foreign_location`].
    #[error("Glance image {image_id} already has a location snapq did not register for this job (a '{scheme}' location); refusing to touch it")]
    ForeignLocation { image_id: Uuid, scheme: String },
    #[error("{image} exists but carries no snapq mark ({found}); refusing to touch it")]
    Unmarked { image: String, found: String },
    #[error("{image} was made by snapq for {made_for}, not for {wanted}; refusing to touch it")]
    OtherJob {
        image: String,
        made_for: String,
        wanted: String,
    },
    #[error("Glance image {image_id} is being made from {claimed_by} by another snapq job, not from {wanted}; refusing the request (the other job goes on undisturbed)")]
    ClaimedByOther {
        image_id: Uuid,
        claimed_by: String,
        wanted: String,
    },
    #[error("Glance image {image_id} is active, but snapq cannot show it made that data from {disk}; refusing to touch it")]
    UnprovenData { image_id: Uuid, disk: String },
}

impl Refusal {
    /// The refusal of an image that has location `url`, naming only its scheme.
    pub fn foreign_location(image_id: Uuid, url: &str) -> Refusal {
        let scheme = url
            .split_once("://")
            .map(|(scheme, _)| scheme)
            .filter(|scheme| {
                !scheme.is_empty()
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            })
            .unwrap_or("unknown");
        Refusal::ForeignLocation {
            image_id,
            scheme: scheme.to_string(),
        }
    }

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
                | Refusal::ClaimedByOther { .. }
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
    #[error("Glance lost its import of the location (a restart?), and its lock holds the image: {evidence}")]
    ImportLost { evidence: String },
    #[error("the job's lease was lost to another worker")]
    LeaseLost,
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
}

/// What each failure leads to. A failure is classified by what failed and where, not by
/// errno alone (the README has the same table):
///
/// | failure | where | disposition |
/// |---|---|---|
/// | Ceph `EPERM`/`EACCES`/`EROFS` | Glance's pool (clone, mark, `snap`) | fallback: the full copy needs no write access there |
/// | Ceph `EPERM`/`EACCES`/`EROFS` | the instance pool or the lease pool | park: the full copy needs that pool too |
/// | manager `EACCES`/`ENOTSUP`/`EOPNOTSUPP` on `rbd task add flatten` | flatten | not a failure: the worker flattens in-process |
/// | Ceph timeout, `EAGAIN`, connection lost, lease lost (`ECANCELED`) | anywhere | retry |
/// | Ceph `ESHUTDOWN` (this client was blocklisted) | anywhere | retry, after reconnecting the cluster handle |
/// | Ceph `EBUSY` (watchers, a snapshot still with clones) | anywhere | retry |
/// | other Ceph errors (`ENOENT` of something that must exist, `ENOSPC`, ...) | anywhere | park |
/// | Glance 5xx, 429, transport errors, Keystone unreachable, a 401 to a token Keystone just issued | anywhere | retry |
/// | Glance 400/403 on the location call | publish | fallback |
/// | Glance's import still running | publish | checkpoint and wait, no attempt spent |
/// | Glance's import task failed | publish | retry (the next attempt registers anew) |
/// | Glance lost its import task (its lock stays) | publish | fallback (`--lost-import copy`), or wait for Glance's lock expiry (`wait`) |
/// | other Glance errors (401, 404 of the image, ...) | anywhere | park |
/// | disk in another cluster than Glance's store | snapshot | fallback |
/// | a refusal (policy, image not waiting, foreign artefact) | anywhere | refuse |
/// | missing disk, image deleted, invalid request | anywhere | park |
///
/// Transient failures past `--max-attempts` are dead-lettered as `retries-exhausted`; the
/// dead-letter consumer does not start a full copy while the outage that caused them lasts.
impl JobError {
    /// The disposition of this failure in a cluster where Glance's pool is `glance_pool`.
    pub fn disposition(&self, glance_pool: &str) -> Disposition {
        match self {
            JobError::Ceph(e) if e.is_transient() || e.kind == RbdErrorKind::Busy => {
                Disposition::Retry
            }
            JobError::Ceph(e) if e.is_fallback_reason() && e.pool() == Some(glance_pool) => {
                Disposition::Fallback
            }
            JobError::Glance(e) if e.refuses_location() => Disposition::Fallback,
            JobError::DifferentCluster { .. } | JobError::ImportLost { .. } => {
                Disposition::Fallback
            }
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

    pub fn is_refusal(&self) -> bool {
        matches!(self, JobError::Refused(_))
    }

    /// Whether this client was blocklisted and its cluster handle must be replaced.
    pub fn needs_reconnect(&self) -> bool {
        matches!(self, JobError::Ceph(e) if e.kind == RbdErrorKind::Blocklisted)
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

    fn ceph(op: &'static str, target: &str, errno: i32) -> JobError {
        JobError::from(RbdError::new(op, target, errno))
    }

    #[test]
    fn ceph_errors_classify_by_errno_and_pool() {
        let d = |e: JobError| e.disposition("images");
        assert_eq!(
            d(ceph("clone", "images/x", libc::EPERM)),
            Disposition::Fallback
        );
        assert_eq!(
            d(ceph("clone", "images/x", libc::EROFS)),
            Disposition::Fallback
        );
        assert_eq!(
            d(ceph("snapshot", "vms/x_disk@snapq-1", libc::EPERM)),
            Disposition::Park,
            "the full copy needs the instance pool too"
        );
        assert_eq!(
            d(ceph("lock", "vms/snapq_lease.1", libc::EACCES)),
            Disposition::Park
        );
        assert_eq!(
            d(ceph("open", "vms/x", libc::ETIMEDOUT)),
            Disposition::Retry
        );
        assert_eq!(
            d(ceph("remove image", "images/x", libc::EBUSY)),
            Disposition::Retry
        );
        assert_eq!(
            d(ceph("open", "vms/x", libc::ESHUTDOWN)),
            Disposition::Retry
        );
        assert!(ceph("open", "vms/x", libc::ESHUTDOWN).needs_reconnect());
        assert!(!ceph("open", "vms/x", libc::ETIMEDOUT).needs_reconnect());
        assert_eq!(d(ceph("open", "vms/x", libc::ENOSPC)), Disposition::Park);
        let missing = JobError::SourceMissing {
            disk: "vms/x".into(),
        };
        assert_eq!(d(missing), Disposition::Park);
        let refused = JobError::from(Refusal::GlancePool {
            pool: "images".into(),
        });
        assert_eq!(d(refused), Disposition::Refuse);
    }
}
