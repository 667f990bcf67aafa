//! Removing snapq's own RBD artefacts: the snapshot of an instance disk and the clone in
//! Glance's pool. "Already gone" counts as done, so these run any number of times, from any
//! worker. Callers decide whether an artefact is snapq's to remove (see `provenance`).

use snapq_common::rbd::{Pool, RbdError};

use crate::lease::LeaseToken;
use crate::names::{ArtifactNames, IMAGE_SNAPSHOT};

/// Unprotects and removes `vms/<disk>@snapq-<image_id>` if it is there; true if it was.
/// Blocking.
pub fn remove_source_snapshot(
    source_pool: &Pool,
    names: &ArtifactNames,
    lease: &LeaseToken,
) -> Result<bool, RbdError> {
    let mut disk = match source_pool.open(&names.source.image) {
        Ok(disk) => disk,
        Err(e) if e.is_not_found() => return Ok(false),
        Err(e) => return Err(e),
    };
    if !disk.snap_exists(&names.source_snapshot)? {
        return Ok(false);
    }
    if disk.is_snap_protected(&names.source_snapshot)? {
        lease.check("unprotect")?;
        disk.unprotect_snap(&names.source_snapshot)?;
    }
    lease.check("remove snapshot")?;
    match disk.remove_snap(&names.source_snapshot) {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes `images/<image_id>` and its `snap`, if there; true if it was. Blocking. Only for this job's own
/// clone, which Glance does not serve: the caller checks both.
pub fn remove_image_and_snapshot(
    image_pool: &Pool,
    names: &ArtifactNames,
    lease: &LeaseToken,
) -> Result<bool, RbdError> {
    let mut image = match image_pool.open(&names.image) {
        Ok(image) => image,
        Err(e) if e.is_not_found() => return Ok(false),
        Err(e) => return Err(e),
    };
    if image.snap_exists(IMAGE_SNAPSHOT)? {
        if image.is_snap_protected(IMAGE_SNAPSHOT)? {
            lease.check("unprotect")?;
            image.unprotect_snap(IMAGE_SNAPSHOT)?;
        }
        lease.check("remove snapshot")?;
        image.remove_snap(IMAGE_SNAPSHOT)?;
    }
    drop(image);
    lease.check("remove image")?;
    match image_pool.remove_image(&names.image) {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}
