//! Step 5: create and protect `images/<image_id>@snap`, register
//! `rbd://<fsid>/images/<image_id>/snap` with Glance, and wait until the image is `active`.

use std::time::Duration;

use snapq_common::glance::GlanceError;
use snapq_common::rbd::run_blocking;
use tracing::info;

use super::StepReport;
use crate::context::JobContext;
use crate::error::JobError;
use crate::names::IMAGE_SNAPSHOT;

const POLL_INTERVAL: Duration = Duration::from_millis(200);

pub async fn ensure(ctx: &JobContext) -> Result<StepReport, JobError> {
    let (image_pool, names) = (ctx.image_pool.clone(), ctx.names.clone());
    let mut report = run_blocking(move || {
        let mut image = image_pool.open(&names.image)?;
        let mut report = StepReport::AlreadyDone;
        if !image.snap_exists(IMAGE_SNAPSHOT)? {
            image.create_snap(IMAGE_SNAPSHOT)?;
            report = StepReport::Done;
        }
        if !image.is_snap_protected(IMAGE_SNAPSHOT)? {
            image.protect_snap(IMAGE_SNAPSHOT)?;
            report = StepReport::Done;
        }
        Ok(report)
    })
    .await?;

    let location = ctx.names.location(&ctx.fsid);
    let record = match ctx.glance.get_image(ctx.image_id).await {
        Ok(record) => record,
        Err(GlanceError::NotFound { .. }) => {
            return Err(JobError::ImageGone {
                image_id: ctx.image_id,
            })
        }
        Err(e) => return Err(e.into()),
    };
    match record.status.as_str() {
        // An earlier attempt finished. Without `show_image_direct_url` Glance does not say
        // where the data is; the clone named after the image is ours either way.
        "active"
            if record
                .direct_url
                .as_deref()
                .is_none_or(|url| url == location) =>
        {
            return Ok(report);
        }
        "active" => {
            return Err(JobError::ImageConflict {
                image_id: ctx.image_id,
                status: record.status,
            })
        }
        "queued" => {
            let api = ctx.glance.add_location(ctx.image_id, &location).await?;
            info!(?api, %location, "location registered with Glance");
            report = StepReport::Done;
        }
        // Glance is still importing a location registered by an earlier attempt.
        "saving" | "importing" | "uploading" => {}
        "killed" | "deleted" | "pending_delete" => {
            return Err(JobError::ImageGone {
                image_id: ctx.image_id,
            })
        }
        _ => {
            return Err(JobError::ImageConflict {
                image_id: ctx.image_id,
                status: record.status,
            })
        }
    }
    let active = ctx
        .glance
        .wait_active(ctx.image_id, ctx.active_timeout, POLL_INTERVAL)
        .await?;
    info!(size = active.size, "Glance image is active");
    Ok(report)
}
