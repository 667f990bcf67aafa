//! Step 3: flatten the clone so it no longer depends on the instance disk.

use std::time::Instant;

use snapq_common::rbd::run_blocking;
use tracing::{info, Span};

use super::StepReport;
use crate::context::JobContext;
use crate::error::JobError;

pub async fn ensure(ctx: &JobContext) -> Result<StepReport, JobError> {
    let (image_pool, names) = (ctx.image_pool.clone(), ctx.names.clone());
    let span = Span::current();
    let report = run_blocking(move || {
        let _entered = span.enter();
        let mut image = image_pool.open(&names.image)?;
        if image.parent()?.is_none() {
            return Ok(StepReport::AlreadyDone);
        }
        let started = Instant::now();
        let mut next_report_percent = 10;
        image.flatten(&mut |done, total| {
            let percent = done.saturating_mul(100).checked_div(total).unwrap_or(100);
            if percent >= next_report_percent {
                info!(percent, done, total, "flatten progress");
                next_report_percent = percent - percent % 10 + 10;
            }
        })?;
        info!(
            seconds = started.elapsed().as_secs_f64(),
            "flatten finished"
        );
        Ok(StepReport::Done)
    })
    .await?;
    Ok(report)
}
