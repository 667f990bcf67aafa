//! librbd/librados failures as typed errors that say what the job should do next.

use std::fmt;

/// What went wrong, from librbd's errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RbdErrorKind {
    NotFound,
    AlreadyExists,
    /// In use: watchers, children, or a protected snapshot.
    Busy,
    /// The Ceph user lacks the capability (EPERM/EACCES).
    PermissionDenied,
    ReadOnly,
    /// The image still has snapshots.
    HasSnapshots,
    InvalidArgument,
    TimedOut,
    TryAgain,
    NoSpace,
    Interrupted,
    /// This client was blocklisted (ESHUTDOWN): the connection is unusable and must be made
    /// anew.
    Blocklisted,
    /// The operation was called off (ECANCELED): snapq stopped it, e.g. on losing a lease.
    Cancelled,
    Other(i32),
}

impl RbdErrorKind {
    pub fn from_errno(errno: i32) -> RbdErrorKind {
        match errno {
            libc::ENOENT => RbdErrorKind::NotFound,
            libc::EEXIST => RbdErrorKind::AlreadyExists,
            libc::EBUSY => RbdErrorKind::Busy,
            libc::EPERM | libc::EACCES => RbdErrorKind::PermissionDenied,
            libc::EROFS => RbdErrorKind::ReadOnly,
            libc::ENOTEMPTY => RbdErrorKind::HasSnapshots,
            libc::EINVAL => RbdErrorKind::InvalidArgument,
            libc::ETIMEDOUT => RbdErrorKind::TimedOut,
            libc::EAGAIN => RbdErrorKind::TryAgain,
            libc::ENOSPC | libc::EDQUOT => RbdErrorKind::NoSpace,
            libc::EINTR | libc::ECONNRESET | libc::ENOTCONN => RbdErrorKind::Interrupted,
            libc::ESHUTDOWN => RbdErrorKind::Blocklisted,
            libc::ECANCELED => RbdErrorKind::Cancelled,
            other => RbdErrorKind::Other(other),
        }
    }
}

impl fmt::Display for RbdErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RbdErrorKind::NotFound => f.write_str("not found"),
            RbdErrorKind::AlreadyExists => f.write_str("already exists"),
            RbdErrorKind::Busy => f.write_str("busy (watchers, clones or a protected snapshot)"),
            RbdErrorKind::PermissionDenied => f.write_str("permission denied for this Ceph user"),
            RbdErrorKind::ReadOnly => f.write_str("read-only"),
            RbdErrorKind::HasSnapshots => f.write_str("image has snapshots"),
            RbdErrorKind::InvalidArgument => f.write_str("invalid argument"),
            RbdErrorKind::TimedOut => f.write_str("timed out"),
            RbdErrorKind::TryAgain => f.write_str("temporarily unavailable"),
            RbdErrorKind::NoSpace => f.write_str("no space left in the cluster or pool quota"),
            RbdErrorKind::Interrupted => f.write_str("connection interrupted"),
            RbdErrorKind::Cancelled => f.write_str("cancelled: the job's lease was lost"),
            RbdErrorKind::Blocklisted => f.write_str("this client was blocklisted (shut down)"),
            RbdErrorKind::Other(errno) => write!(f, "errno {errno}"),
        }
    }
}

/// A failed Ceph operation: what was attempted, on what, and why it failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op} {target}: {kind}")]
pub struct RbdError {
    pub op: &'static str,
    /// The object operated on, e.g. `vms/<uuid>_disk@snapq-<id>`; never a secret.
    pub target: String,
    pub kind: RbdErrorKind,
}

impl RbdError {
    pub fn new(op: &'static str, target: impl Into<String>, errno: i32) -> RbdError {
        RbdError {
            op,
            target: target.into(),
            kind: RbdErrorKind::from_errno(errno),
        }
    }

    pub fn with_kind(op: &'static str, target: impl Into<String>, kind: RbdErrorKind) -> RbdError {
        RbdError {
            op,
            target: target.into(),
            kind,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == RbdErrorKind::NotFound
    }

    /// The pool the operation changes: of the target (`pool/image[@snap]`, `pool/object`),
    /// or for a clone (`parent -> pool/child`) of the new child.
    pub fn pool(&self) -> Option<&str> {
        let changed = match self.target.rsplit_once(" -> ") {
            Some((_, child)) => child,
            None => &self.target,
        };
        changed.split_once('/').map(|(pool, _)| pool)
    }

    pub fn is_already_exists(&self) -> bool {
        self.kind == RbdErrorKind::AlreadyExists
    }

    /// Worth retrying later: the cluster was slow or briefly unreachable.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            RbdErrorKind::TimedOut
                | RbdErrorKind::TryAgain
                | RbdErrorKind::Interrupted
                | RbdErrorKind::Cancelled
                | RbdErrorKind::Blocklisted
        )
    }

    /// The fast path cannot work with this cluster set-up (e.g. no write access to the
    /// images pool): the job should fall back to a full copy.
    pub fn is_fallback_reason(&self) -> bool {
        matches!(
            self.kind,
            RbdErrorKind::PermissionDenied | RbdErrorKind::ReadOnly
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_is_the_one_the_operation_changes() {
        let clone = RbdError::new("clone", "vms/d_disk@snapq-1 -> images/1", libc::EPERM);
        assert_eq!(clone.pool(), Some("images"));
        let snap = RbdError::new("snapshot", "vms/d_disk@snapq-1", libc::EPERM);
        assert_eq!(snap.pool(), Some("vms"));
        assert_eq!(RbdError::new("ceph-mgr", "rbd task add", 1).pool(), None);
    }

    #[test]
    fn errno_maps_to_kinds_that_classify_the_error() {
        let eperm = RbdError::new("clone", "images/x", libc::EPERM);
        assert_eq!(eperm.kind, RbdErrorKind::PermissionDenied);
        assert!(eperm.is_fallback_reason() && !eperm.is_transient());
        let etimedout = RbdError::new("open", "vms/d", libc::ETIMEDOUT);
        assert!(etimedout.is_transient() && !etimedout.is_fallback_reason());
        assert!(RbdError::new("open", "vms/d", libc::ENOENT).is_not_found());
        assert_eq!(RbdErrorKind::from_errno(libc::EBUSY), RbdErrorKind::Busy);
        assert_eq!(
            RbdErrorKind::from_errno(libc::EEXIST),
            RbdErrorKind::AlreadyExists
        );
        assert_eq!(RbdErrorKind::from_errno(9999), RbdErrorKind::Other(9999));
    }

    #[test]
    fn message_names_operation_and_target() {
        let e = RbdError::new("clone", "vms/disk@s -> images/i", libc::EPERM);
        assert_eq!(
            e.to_string(),
            "clone vms/disk@s -> images/i: permission denied for this Ceph user"
        );
    }
}
