//! Step 4: remove the snapshot of the instance disk (the clone no longer needs it).

use snapq_common::rbd::run_blocking;

use super::StepReport;
use crate::artefacts::remove_source_snapshot;
use crate::context::JobContext;
use crate::error::JobError;

pub async fn ensure(ctx: &JobContext) -> Result<StepReport, JobError> {
    let (source_pool, names, lease) = (
        ctx.source_pool.clone(),
        ctx.names.clone(),
        ctx.lease.clone(),
    );
    let removed =
        run_blocking(move || remove_source_snapshot(&source_pool, &names, &lease)).await?;
    Ok(if removed {
        StepReport::Done
    } else {
        StepReport::AlreadyDone
    })
}
