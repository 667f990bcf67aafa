//! Step 2: clone the disk's snapshot into Glance's pool as `images/<image_id>`, and mark the
//! clone as this job's (see `provenance`).

use snapq_common::rbd::run_blocking;

use super::StepReport;
use crate::context::JobContext;
use crate::error::JobError;
use crate::provenance::{inspect_clone, mark_clone, CloneOwner};

pub async fn ensure(ctx: &JobContext) -> Result<StepReport, JobError> {
    let (source_pool, image_pool, names, image_id, lease) = (
        ctx.source_pool.clone(),
        ctx.image_pool.clone(),
        ctx.names.clone(),
        ctx.image_id,
        ctx.lease.clone(),
    );
    run_blocking(move || {
        match inspect_clone(&image_pool, &names, image_id)? {
            CloneOwner::ThisJob => return Ok(Ok(StepReport::AlreadyDone)),
            // An earlier attempt cloned and stopped before marking: its parent link to this
            // job's snapshot proves it.
            CloneOwner::ThisJobUnmarked => {
                lease.check("mark")?;
                mark_clone(&image_pool, &names, image_id)?;
                return Ok(Ok(StepReport::Done));
            }
            CloneOwner::Absent => {}
            other => {
                return Ok(other
                    .require_this_job(&names)
                    .map(|()| StepReport::AlreadyDone)
                    .map_err(JobError::from))
            }
        }
        let features = source_pool
            .open_read_only(&names.source.image, Some(&names.source_snapshot))?
            .features()?;
        lease.check("clone")?;
        match image_pool.clone_from(
            &source_pool,
            &names.source.image,
            &names.source_snapshot,
            &names.image,
            features,
        ) {
            Ok(()) => {}
            // Someone made the name meanwhile: say whose it is, touch nothing.
            Err(e) if e.is_already_exists() => {
                let owner = inspect_clone(&image_pool, &names, image_id)?;
                if !owner.is_this_job() {
                    return Ok(owner
                        .require_this_job(&names)
                        .map(|()| StepReport::AlreadyDone)
                        .map_err(JobError::from));
                }
            }
            Err(e) => return Err(e),
        }
        lease.check("mark")?;
        mark_clone(&image_pool, &names, image_id)?;
        Ok(Ok(StepReport::Done))
    })
    .await?
}
