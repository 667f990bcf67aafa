//! Step 1: admit the job (the Glance image must be waiting for it), then snapshot the
//! instance disk.

use snapq_common::rbd::run_blocking;

use super::StepReport;
use crate::artefacts::ensure_snapshot;
use crate::context::JobContext;
use crate::error::JobError;
use crate::gate::{self, Admission};
use crate::provenance::{inspect_clone, CloneOwner};

pub async fn ensure(ctx: &JobContext) -> Result<StepReport, JobError> {
    // Before anything is made, so a refused request leaves everything as it was.
    if gate::admit(ctx).await? == Admission::AlreadyRegistered {
        return Ok(StepReport::AlreadyDone);
    }
    if let Some(store_fsid) = &ctx.glance_store_fsid {
        if store_fsid != &ctx.fsid {
            return Err(JobError::DifferentCluster {
                disk_fsid: ctx.fsid.clone(),
                store_fsid: store_fsid.clone(),
            });
        }
    }
    let (source_pool, image_pool, names, image_id, lease) = (
        ctx.source_pool.clone(),
        ctx.image_pool.clone(),
        ctx.names.clone(),
        ctx.image_id,
        ctx.lease.clone(),
    );
    run_blocking(move || {
        // This job's clone, already independent, means an earlier attempt got past the
        // flatten; a new snapshot would only be removed again.
        if inspect_clone(&image_pool, &names, image_id)? == CloneOwner::ThisJob
            && image_pool
                .open_read_only(&names.image, None)?
                .parent()?
                .is_none()
        {
            return Ok(Ok(StepReport::AlreadyDone));
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
        // Protected too: clone v2 does not need it, but a cluster still on clone v1 does, and
        // it keeps the snapshot from being removed under the clone.
        let done = ensure_snapshot(
            &source_pool,
            &names.source.image,
            &mut disk,
            &names.source_snapshot,
            &lease,
        )?;
        Ok(Ok(if done.made {
            StepReport::Done
        } else {
            StepReport::AlreadyDone
        }))
    })
    .await?
}
