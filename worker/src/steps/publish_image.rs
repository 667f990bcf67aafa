//! Step 5: create and protect `images/<image_id>@snap`, register
//! `rbd://<fsid>/images/<image_id>/snap` with Glance, and wait until the image is `active`.

use std::time::{Duration, Instant};

use snapq_common::glance::GlanceError;
use snapq_common::rbd::run_blocking;
use tracing::{info, warn};

use super::StepReport;
use crate::context::JobContext;
use crate::error::{JobError, Refusal};
use crate::names::IMAGE_SNAPSHOT;

const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Glance imports a registered location asynchronously and, when the import fails (a busy
/// database, a restart), says nothing: the image just stays `queued`. Registering again
/// after this long recovers without waiting for the whole active timeout.
const REREGISTER_AFTER: Duration = Duration::from_secs(10);

pub async fn ensure(ctx: &JobContext) -> Result<StepReport, JobError> {
    // `snap` is made only on this job's own clone.
    ctx.require_own_clone().await?;
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
    let record = ctx.glance_image().await?;
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
            return Err(Refusal::ForeignLocation {
                image_id: ctx.image_id,
                location: record.direct_url.unwrap_or_default(),
            }
            .into())
        }
        "queued" => {
            register(ctx, &location).await?;
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
    let deadline = Instant::now() + ctx.active_timeout;
    loop {
        let wait = REREGISTER_AFTER.min(deadline.saturating_duration_since(Instant::now()));
        match ctx
            .glance
            .wait_active(ctx.image_id, wait, POLL_INTERVAL)
            .await
        {
            Ok(active) => {
                info!(size = active.size, "Glance image is active");
                return Ok(report);
            }
            Err(GlanceError::NotActive { status, .. }) if Instant::now() < deadline => {
                if status == "queued" {
                    warn!("Glance has not imported the location (image still queued); registering it again");
                    register(ctx, &location).await?;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Registers the location. A refusal because an earlier registration already moved the image
/// on (Glance answers 409 unless the image is `queued`) is success.
async fn register(ctx: &JobContext, location: &str) -> Result<(), JobError> {
    match ctx.glance.add_location(ctx.image_id, location).await {
        Ok(api) => {
            info!(?api, %location, "location registered with Glance");
            Ok(())
        }
        Err(e) if e.refuses_location() => match ctx.glance.get_image(ctx.image_id).await {
            Ok(record) if record.status != "queued" => Ok(()),
            _ => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}
