//! Making and removing snapq's own RBD artefacts: the snapshot of an instance disk, the clone
//! in Glance's pool and its `snap`. "Already there" and "already gone" count as done, so these
//! run any number of times, from any worker. Callers decide whether an artefact is snapq's to
//! make or remove (see `provenance`).

use snapq_common::rbd::{Image, Pool, RbdError};

use crate::lease::LeaseToken;
use crate::names::{ArtifactNames, IMAGE_SNAPSHOT};

/// Makes sure the snapshot `snap` of `image` (opened as `name` from `pool`) exists, is
/// protected, and can be opened; says what had to be done. Blocking.
///
/// librbd makes a snapshot in steps: a worker killed between them leaves a snapshot that is
/// listed but cannot be opened (its object map was never written), so no one can read or clone
/// it — Glance refuses its location as "Invalid location" every time. Such a half-made
/// snapshot is removed and made again.
pub fn ensure_snapshot(
    pool: &Pool,
    name: &str,
    image: &mut Image,
    snap: &str,
    lease: &LeaseToken,
) -> Result<Ensured, RbdError> {
    let mut done = Ensured::default();
    if image.snap_exists(snap)? && !opens_at(pool, name, snap)? {
        tracing::warn!(
            snapshot = %format!("{}/{name}@{snap}", pool.name()),
            "the snapshot cannot be opened (a crash while librbd made it); making it again"
        );
        if image.is_snap_protected(snap)? {
            lease.check("unprotect")?;
            image.unprotect_snap(snap)?;
        }
        lease.check("remove snapshot")?;
        image.remove_snap(snap)?;
    }
    if !image.snap_exists(snap)? {
        lease.check("snapshot")?;
        image.create_snap(snap)?;
        done.made = true;
    }
    if !image.is_snap_protected(snap)? {
        lease.check("protect")?;
        image.protect_snap(snap)?;
        done.protected = true;
    }
    Ok(done)
}

/// What [`ensure_snapshot`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ensured {
    /// The snapshot was made (anew).
    pub made: bool,
    /// The snapshot was protected.
    pub protected: bool,
}

/// Whether `name@snap` can be opened.
fn opens_at(pool: &Pool, name: &str, snap: &str) -> Result<bool, RbdError> {
    match pool.open_read_only(name, Some(snap)) {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

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
