//! Removing what a job left in Ceph. Every function treats "already gone" as success, so
//! cleanup can run any number of times, from any worker.

use snapq_common::glance::GlanceError;
use snapq_common::rbd::{run_blocking, Pool, RbdError};
use tracing::{info, warn};

use crate::context::JobContext;
use crate::error::JobError;
use crate::names::{ArtifactNames, IMAGE_SNAPSHOT};
use crate::provenance::{inspect_clone, CloneOwner};
use crate::steps::StepReport;

/// Unprotects and removes `vms/<disk>@snapq-<image_id>` if it is there. Blocking.
pub fn remove_source_snapshot(
    source_pool: &Pool,
    names: &ArtifactNames,
) -> Result<StepReport, RbdError> {
    let mut disk = match source_pool.open(&names.source.image) {
        Ok(disk) => disk,
        Err(e) if e.is_not_found() => return Ok(StepReport::AlreadyDone),
        Err(e) => return Err(e),
    };
    if !disk.snap_exists(&names.source_snapshot)? {
        return Ok(StepReport::AlreadyDone);
    }
    if disk.is_snap_protected(&names.source_snapshot)? {
        disk.unprotect_snap(&names.source_snapshot)?;
    }
    match disk.remove_snap(&names.source_snapshot) {
        Ok(()) => Ok(StepReport::Done),
        Err(e) if e.is_not_found() => Ok(StepReport::AlreadyDone),
        Err(e) => Err(e),
    }
}

/// Removes `images/<image_id>` and its `snap`, if there. Blocking. Only for this job's own
/// clone, which Glance does not serve: the caller checks both.
pub fn remove_image_and_snapshot(
    image_pool: &Pool,
    names: &ArtifactNames,
) -> Result<StepReport, RbdError> {
    let mut image = match image_pool.open(&names.image) {
        Ok(image) => image,
        Err(e) if e.is_not_found() => return Ok(StepReport::AlreadyDone),
        Err(e) => return Err(e),
    };
    if image.snap_exists(IMAGE_SNAPSHOT)? {
        if image.is_snap_protected(IMAGE_SNAPSHOT)? {
            image.unprotect_snap(IMAGE_SNAPSHOT)?;
        }
        image.remove_snap(IMAGE_SNAPSHOT)?;
    }
    drop(image);
    match image_pool.remove_image(&names.image) {
        Ok(()) => Ok(StepReport::Done),
        Err(e) if e.is_not_found() => Ok(StepReport::AlreadyDone),
        Err(e) => Err(e),
    }
}

/// What cleanup did with the clone in Glance's pool.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CloneCleanup {
    Removed,
    Absent,
    /// Glance has the image (its record is past `queued`): the clone is Glance's now.
    KeptForGlance,
    /// Not this job's: left exactly as found.
    KeptNotOurs(CloneOwner),
}

/// Removes the partial state of a failed job: this job's own clone in Glance's pool, unless
/// Glance has taken it over, and this job's snapshot of the instance disk. Anything under
/// those names that snapq did not make for this job is left alone.
pub async fn remove_partial_state(ctx: &JobContext) -> Result<(), JobError> {
    let glance_has_it = match ctx.glance.get_image(ctx.image_id).await {
        // A queued (or failed) image does not use the clone; any other status may.
        Ok(record) => !matches!(record.status.as_str(), "queued" | "killed" | "deleted"),
        Err(GlanceError::NotFound { .. }) => false,
        Err(e) => return Err(e.into()),
    };
    let (source_pool, image_pool, names, image_id) = (
        ctx.source_pool.clone(),
        ctx.image_pool.clone(),
        ctx.names.clone(),
        ctx.image_id,
    );
    let (image, snapshot) = run_blocking(move || {
        let image = match inspect_clone(&image_pool, &names, image_id)? {
            CloneOwner::Absent => CloneCleanup::Absent,
            owner if !owner.is_this_job() => CloneCleanup::KeptNotOurs(owner),
            _ if glance_has_it => CloneCleanup::KeptForGlance,
            _ => match remove_image_and_snapshot(&image_pool, &names)? {
                StepReport::Done => CloneCleanup::Removed,
                StepReport::AlreadyDone => CloneCleanup::Absent,
            },
        };
        // The snapshot's name is its mark: `snapq-<image_id>` on this job's disk.
        let snapshot = remove_source_snapshot(&source_pool, &names)?;
        Ok((image, snapshot))
    })
    .await?;
    if let CloneCleanup::KeptNotOurs(owner) = &image {
        warn!(image = %ctx.names.image_spec(), ?owner, "left an image snapq did not make for this job untouched");
    }
    info!(
        clone = ?image,
        removed_source_snapshot = snapshot == StepReport::Done,
        "cleaned up partial state"
    );
    Ok(())
}
