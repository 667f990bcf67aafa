//! Step 2: clone the disk's snapshot into Glance's pool as `images/<image_id>`.

use snapq_common::rbd::run_blocking;

use super::StepReport;
use crate::context::JobContext;
use crate::error::JobError;

pub async fn ensure(ctx: &JobContext) -> Result<StepReport, JobError> {
    let (source_pool, image_pool, names) = (
        ctx.source_pool.clone(),
        ctx.image_pool.clone(),
        ctx.names.clone(),
    );
    run_blocking(move || {
        match image_pool.open_read_only(&names.image, None) {
            Ok(existing) => {
                return Ok(match existing.parent()? {
                    // Already flattened by an earlier attempt.
                    None => Ok(StepReport::AlreadyDone),
                    Some(p)
                        if p.pool == names.source.pool
                            && p.image == names.source.image
                            && p.snap == names.source_snapshot =>
                    {
                        Ok(StepReport::AlreadyDone)
                    }
                    Some(_) => Err(JobError::ForeignImage {
                        image: names.image_spec(),
                        expected_parent: names.source_snapshot_spec(),
                    }),
                });
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let features = source_pool
            .open_read_only(&names.source.image, Some(&names.source_snapshot))?
            .features()?;
        image_pool.clone_from(
            &source_pool,
            &names.source.image,
            &names.source_snapshot,
            &names.image,
            features,
        )?;
        Ok(Ok(StepReport::Done))
    })
    .await?
}
