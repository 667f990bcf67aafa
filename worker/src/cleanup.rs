//! Removing what a job left in Ceph. Every function treats "already gone" as success, so
//! cleanup can run any number of times, from any worker.

use snapq_common::glance::GlanceError;
use snapq_common::rbd::{run_blocking, Pool, RbdError};
use tracing::info;

use crate::context::JobContext;
use crate::error::JobError;
use crate::names::{ArtifactNames, IMAGE_SNAPSHOT};
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

/// Removes `images/<image_id>` and its `snap`, if there. Blocking. Only for an image Glance
/// does not serve: the caller checks.
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

/// Removes the partial state of a failed job: the clone in Glance's pool unless Glance
/// serves it as an active image, and the snapshot of the instance disk.
pub async fn remove_partial_state(ctx: &JobContext) -> Result<(), JobError> {
    let serves_clone = match ctx.glance.get_image(ctx.image_id).await {
        Ok(record) => record.is_active(),
        Err(GlanceError::NotFound { .. }) => false,
        Err(e) => return Err(e.into()),
    };
    let (source_pool, image_pool, names) = (
        ctx.source_pool.clone(),
        ctx.image_pool.clone(),
        ctx.names.clone(),
    );
    let (image, snapshot) = run_blocking(move || {
        let image = if serves_clone {
            StepReport::AlreadyDone
        } else {
            remove_image_and_snapshot(&image_pool, &names)?
        };
        let snapshot = remove_source_snapshot(&source_pool, &names)?;
        Ok((image, snapshot))
    })
    .await?;
    info!(
        removed_image = image == StepReport::Done,
        removed_source_snapshot = snapshot == StepReport::Done,
        "cleaned up partial state"
    );
    Ok(())
}
