//! Step 5: create and protect `images/<image_id>@snap`, register
//! `rbd://<fsid>/images/<image_id>/snap` with Glance, and wait until the image is `active`.
//!
//! Glance imports a location asynchronously: the registration takes the image's import lock
//! (`os_glance_import_task`) and a task runs the import; a busy Glance (hashing earlier
//! images) may take minutes to get to it. While that task holds the lock the import is in
//! progress, not failed: the step waits (at most `active_timeout` per delivery, then the job
//! is checkpointed and comes back, like a long flatten) and never registers again. Only when
//! the lock is gone with the image still `queued` — Glance's task failed and dropped it;
//! its task record says why, when this user may read it — is the failure a (transient)
//! error: the next attempt registers anew.

use std::time::Duration;

use tokio::time::Instant;

use snapq_common::rbd::run_blocking;
use tracing::{info, warn};

use super::StepReport;
use crate::context::JobContext;
use crate::error::{JobError, Refusal};
use crate::names::IMAGE_SNAPSHOT;

/// Polls of Glance start this often and slow down to [`MAX_POLL`]: an import under a busy
/// Glance takes seconds to minutes, and polling faster only adds to its load.
const MIN_POLL: Duration = Duration::from_millis(50);
const MAX_POLL: Duration = Duration::from_secs(1);

pub async fn ensure(ctx: &JobContext) -> Result<StepReport, JobError> {
    // `snap` is made only on this job's own clone.
    ctx.require_own_clone().await?;
    let (image_pool, names, lease) = (ctx.image_pool.clone(), ctx.names.clone(), ctx.lease.clone());
    let mut report = run_blocking(move || {
        let mut image = image_pool.open(&names.image)?;
        let mut report = StepReport::AlreadyDone;
        if !image.snap_exists(IMAGE_SNAPSHOT)? {
            lease.check("snapshot")?;
            image.create_snap(IMAGE_SNAPSHOT)?;
            report = StepReport::Done;
        }
        if !image.is_snap_protected(IMAGE_SNAPSHOT)? {
            lease.check("protect")?;
            image.protect_snap(IMAGE_SNAPSHOT)?;
            report = StepReport::Done;
        }
        Ok(report)
    })
    .await?;

    let location = ctx.names.location(&ctx.fsid);
    let hold_until = Instant::now() + ctx.active_timeout;
    let mut polls = poll_intervals();
    // The import task seen holding the lock, to ask Glance how it ended if the lock goes.
    let mut import_task: Option<String> = None;
    let mut registered = false;
    loop {
        let record = ctx.glance_image().await?;
        match record.status.as_str() {
            // An earlier attempt may have finished. Without `show_image_direct_url` Glance
            // does not say where the data is; the clone named after the image is this job's
            // (checked above) either way.
            "active" => {
                return match record.direct_url {
                    Some(url) if url != location => Err(Refusal::ForeignLocation {
                        image_id: ctx.image_id,
                        location: url,
                    }
                    .into()),
                    _ => {
                        info!(size = record.size, "Glance image is active");
                        Ok(report)
                    }
                };
            }
            "queued" | "importing" => match record.os_glance_import_task {
                Some(task) if import_task.as_deref() != Some(task.as_str()) => {
                    info!(task = %task, "Glance is importing the location");
                    import_task = Some(task);
                }
                Some(_) => {}
                // Unlocked and still queued after this delivery registered the location:
                // Glance's import ended without making the image active.
                None if record.status == "queued" && registered => {
                    return Err(import_failed(ctx, import_task.as_deref()).await);
                }
                None if record.status == "queued" => {
                    register(ctx, &location).await?;
                    registered = true;
                    report = StepReport::Done;
                }
                None => {}
            },
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
        if Instant::now() >= hold_until {
            return Err(JobError::ImportInProgress {
                task: import_task.unwrap_or_default(),
            });
        }
        tokio::time::sleep(polls.next().unwrap_or(MAX_POLL)).await;
    }
}

fn poll_intervals() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(MIN_POLL)
        .with_max_delay(MAX_POLL)
        .with_factor(1.5)
        .without_max_times()
        .build()
}

/// The error for an import Glance gave up on: its task's message when Glance shows it.
async fn import_failed(ctx: &JobContext, task: Option<&str>) -> JobError {
    let Some(task) = task else {
        return JobError::ImportFailed {
            task: "unseen".to_string(),
            message:
                "the image is queued again and unlocked: the import ended without making it active"
                    .to_string(),
        };
    };
    let message = match ctx.glance.get_task(task).await {
        Ok(Some(record)) if record.failed() => {
            record.message.unwrap_or_else(|| "no message".to_string())
        }
        Ok(Some(record)) => format!("task ended '{}' with the image still queued", record.status),
        Ok(None) => "its task record is not visible".to_string(),
        Err(e) => format!("its task record could not be read: {e}"),
    };
    warn!(task, %message, "Glance's import of the location failed; the next attempt registers it again");
    JobError::ImportFailed {
        task: task.to_string(),
        message,
    }
}

/// Registers the location. A conflict means an earlier registration already moved the image
/// on, or an import holds its lock: either way the caller's next look at the image says which.
async fn register(ctx: &JobContext, location: &str) -> Result<(), JobError> {
    ctx.lease.check("register the location of")?;
    match ctx.glance.add_location(ctx.image_id, location).await {
        Ok(api) => {
            info!(?api, %location, "location registered with Glance");
            Ok(())
        }
        Err(e) if e.location_conflict() => {
            info!(error = %e, "Glance has an import of this image under way");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
