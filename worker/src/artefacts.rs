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
    remove_disk_snapshot(
        source_pool,
        &names.source.image,
        &names.source_snapshot,
        lease,
    )
}

/// Unprotects and removes the snapshot `snap` of the disk `disk` (a name only snapq gives, for
/// one job), including a copy of it librbd left in its trash namespace; true if there was
/// anything to remove. Blocking.
///
/// librbd removes a snapshot in two steps: it first moves it to the trash namespace, then
/// removes it. A worker killed between the two leaves the snapshot there, invisible to a
/// look-up by name; the disk then cannot be deleted (Nova's instance delete fails), so the
/// trashed copy is looked for and removed by id every time.
pub fn remove_disk_snapshot(
    pool: &Pool,
    disk: &str,
    snap: &str,
    lease: &LeaseToken,
) -> Result<bool, RbdError> {
    let mut image = match pool.open(disk) {
        Ok(image) => image,
        Err(e) if e.is_not_found() => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut removed = false;
    if image.snap_exists(snap)? {
        if image.is_snap_protected(snap)? {
            lease.check("unprotect")?;
            image.unprotect_snap(snap)?;
        }
        lease.check("remove snapshot")?;
        match image.remove_snap(snap) {
            Ok(()) => removed = true,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    // Also right after a removal that succeeded: librbd leaves the snapshot in the trash
    // namespace while a clone still uses it (which snapq's own steps never do).
    for id in image.trashed_snaps_named(snap)? {
        lease.check("remove snapshot")?;
        match image.remove_snap_by_id(id, snap) {
            Ok(()) => {
                tracing::info!(snapshot = %snap, id, "removed the snapshot from librbd's trash namespace");
                removed = true;
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
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
