//! Step 1: snapshot the instance disk.

use snapq_common::rbd::run_blocking;

use super::StepReport;
use crate::context::JobContext;
use crate::error::JobError;

pub async fn ensure(ctx: &JobContext) -> Result<StepReport, JobError> {
    if let Some(store_fsid) = &ctx.glance_store_fsid {
        if store_fsid != &ctx.fsid {
            return Err(JobError::DifferentCluster {
                disk_fsid: ctx.fsid.clone(),
                store_fsid: store_fsid.clone(),
            });
        }
    }
    check_glance_image_takes_raw_data(ctx).await?;
    let (source_pool, image_pool, names) = (
        ctx.source_pool.clone(),
        ctx.image_pool.clone(),
        ctx.names.clone(),
    );
    run_blocking(move || {
        // A clone that is already independent means a previous attempt got past the flatten;
        // a new snapshot would only be removed again.
        if let Ok(image) = image_pool.open_read_only(&names.image, None) {
            if image.parent()?.is_none() {
                return Ok(Ok(StepReport::AlreadyDone));
            }
        }
        let mut disk = match source_pool.open(&names.source.image) {
            Ok(disk) => disk,
            Err(e) if e.is_not_found() => {
                return Ok(Err(JobError::SourceMissing {
                    disk: names.source.to_string(),
                }))
            }
            Err(e) => return Err(e),
        };
        let mut report = StepReport::AlreadyDone;
        if !disk.snap_exists(&names.source_snapshot)? {
            disk.create_snap(&names.source_snapshot)?;
            report = StepReport::Done;
        }
        // Clone v2 does not need it, but a cluster still on clone v1 does, and it keeps the
        // snapshot from being removed under the clone.
        if !disk.is_snap_protected(&names.source_snapshot)? {
            disk.protect_snap(&names.source_snapshot)?;
        }
        Ok(Ok(report))
    })
    .await?
}

/// An RBD clone is raw data: Glance must expect a raw image (like Nova's `is_cloneable`).
/// Checked before anything is made, so a mismatch costs nothing to undo.
async fn check_glance_image_takes_raw_data(ctx: &JobContext) -> Result<(), JobError> {
    let record = ctx.glance_image().await?;
    match record.disk_format.as_deref() {
        None | Some("raw") => Ok(()),
        Some(other) => Err(JobError::NotRaw {
            image_id: ctx.image_id,
            disk_format: other.to_string(),
        }),
    }
}
