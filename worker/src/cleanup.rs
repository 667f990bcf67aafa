//! Removing what a job left in Ceph. Every function treats "already gone" as success, so
//! cleanup can run any number of times, from any worker.

use snapq_common::glance::GlanceError;
use snapq_common::rbd::run_blocking;
use tracing::{info, warn};

use crate::artefacts::{remove_image_and_snapshot, remove_source_snapshot};
use crate::context::JobContext;
use crate::error::JobError;
use crate::provenance::{inspect_clone, CloneOwner};

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
            _ if remove_image_and_snapshot(&image_pool, &names)? => CloneCleanup::Removed,
            _ => CloneCleanup::Absent,
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
        removed_source_snapshot = snapshot,
        "cleaned up partial state"
    );
    Ok(())
}
