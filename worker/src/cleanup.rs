//! Removing what a job left in Ceph. Every function treats "already gone" as success, so
//! cleanup can run any number of times, from any worker.

use snapq_common::glance::GlanceError;
use snapq_common::rbd::run_blocking;
use tracing::{info, warn};

use crate::artefacts::{remove_image_and_snapshot, remove_source_snapshot};
use crate::context::JobContext;
use crate::error::JobError;
use crate::names::IMAGE_SNAPSHOT;
use crate::provenance::{inspect_clone, CloneOwner};

/// What cleanup did with the clone in Glance's pool.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CloneCleanup {
    Removed,
    Absent,
    /// Glance has the image (its record is past `queued`): the clone is Glance's now.
    KeptForGlance,
    /// Glance could not be asked and the clone has its `snap`, so a location may have been
    /// registered: kept, and recorded as a leftover.
    KeptUnsure,
    /// Not this job's: left exactly as found.
    KeptNotOurs(CloneOwner),
}

/// Removes the partial state of a failed job: this job's own clone in Glance's pool, unless
/// Glance has taken it over, and this job's snapshot of the instance disk. Anything under
/// those names that snapq did not make for this job is left alone.
///
/// It does not need Glance: when Glance cannot be asked, a clone without its `snap` was never
/// registered (`publish_image` makes `snap` before it registers) and is removed; one with
/// `snap` is kept. Returns what of this job's own artefacts remains (as `pool/image[@snap]`),
/// for the job's record and `snapq jobs purge`.
pub async fn remove_partial_state(ctx: &JobContext) -> Result<Vec<String>, JobError> {
    let glance_has_it = match ctx.glance.get_image(ctx.image_id).await {
        // A queued (or failed) image does not use the clone; any other status may.
        Ok(record) => Some(!matches!(
            record.status.as_str(),
            "queued" | "killed" | "deleted"
        )),
        Err(GlanceError::NotFound { .. }) => Some(false),
        Err(e) => {
            warn!(error = %e, "cannot ask Glance about the image; cleaning up without it");
            None
        }
    };
    let (source_pool, image_pool, names, image_id, lease) = (
        ctx.source_pool.clone(),
        ctx.image_pool.clone(),
        ctx.names.clone(),
        ctx.image_id,
        ctx.lease.clone(),
    );
    let (image, snapshot) = run_blocking(move || {
        let image = match inspect_clone(&image_pool, &names, image_id)? {
            CloneOwner::Absent => CloneCleanup::Absent,
            owner if !owner.is_this_job() => CloneCleanup::KeptNotOurs(owner),
            _ if glance_has_it == Some(true) => CloneCleanup::KeptForGlance,
            _ if glance_has_it.is_none()
                && image_pool
                    .open_read_only(&names.image, None)?
                    .snap_exists(IMAGE_SNAPSHOT)? =>
            {
                CloneCleanup::KeptUnsure
            }
            _ if remove_image_and_snapshot(&image_pool, &names, &lease)? => CloneCleanup::Removed,
            _ => CloneCleanup::Absent,
        };
        // The snapshot's name is its mark: `snapq-<image_id>` on this job's disk.
        let snapshot = remove_source_snapshot(&source_pool, &names, &lease)?;
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
    Ok(match image {
        CloneCleanup::KeptUnsure => vec![ctx.names.image_spec()],
        _ => Vec::new(),
    })
}

/// Everything a job for `ctx`'s image and disk may have made, as `pool/image[@snap]`: what
/// its record says remains when cleanup could not run.
pub fn possible_leftovers(ctx: &JobContext) -> Vec<String> {
    vec![
        ctx.names.source_snapshot_spec(),
        ctx.names.image_spec(),
        format!(
            "{}@{}{}",
            ctx.names.source,
            crate::fallback::FALLBACK_SNAPSHOT_PREFIX,
            ctx.image_id
        ),
    ]
}
