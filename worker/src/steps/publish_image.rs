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
use crate::artefacts::ensure_snapshot;
use crate::context::JobContext;
use crate::error::{JobError, Refusal};
use crate::import_watch::{self, Verdict};
use crate::names::IMAGE_SNAPSHOT;
use crate::settings::{LostImport, LostImportAction};
use snapq_common::glance::TaskLookup;

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
        let done = ensure_snapshot(
            &image_pool,
            &names.image,
            &mut image,
            IMAGE_SNAPSHOT,
            &lease,
        )?;
        Ok(if done.made || done.protected {
            StepReport::Done
        } else {
            StepReport::AlreadyDone
        })
    })
    .await?;

    let location = ctx.names.location(&ctx.fsid);
    let hold_until = Instant::now() + ctx.active_timeout;
    let mut polls = poll_intervals();
    // The import task seen holding the lock, to ask Glance how it ended if the lock goes.
    let mut import_task: Option<String> = None;
    let mut registered = false;
    let mut watch = LockWatch::new(ctx.lost_import);
    loop {
        let record = ctx.glance_image().await?;
        match record.status.as_str() {
            // An earlier attempt may have finished. Without `show_image_direct_url` Glance
            // does not say where the data is; the clone named after the image is this job's
            // (checked above) either way.
            "active" => {
                return match record.direct_url {
                    Some(url) if url != location => {
                        Err(Refusal::foreign_location(ctx.image_id, &url).into())
                    }
                    _ => {
                        info!(size = record.size, "Glance image is active");
                        Ok(report)
                    }
                };
            }
            "queued" | "importing" => match record.os_glance_import_task {
                Some(task) => {
                    if import_task.as_deref() != Some(task.as_str()) {
                        info!(task = %task, "Glance is importing the location");
                        import_task = Some(task.clone());
                    }
                    if watch.due() && watch.look(ctx, &task, &location).await? {
                        registered = true;
                        report = StepReport::Done;
                    }
                }
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

/// How often, while an import holds the image's lock, Glance is asked whether its task lives.
const LIVENESS_INTERVAL: Duration = Duration::from_secs(5);

/// Watches the task holding the image's import lock, and acts when Glance lost it.
struct LockWatch {
    policy: LostImport,
    last_look: Option<Instant>,
    /// Whether this delivery already tried to register past a lock it could not judge (or,
    /// with `--lost-import wait`, a lost one): Glance answers 409 until the lock expires,
    /// then takes the registration; once per delivery is enough.
    tried_past_lock: bool,
}

impl LockWatch {
    fn new(policy: LostImport) -> LockWatch {
        LockWatch {
            policy,
            last_look: None,
            tried_past_lock: false,
        }
    }

    fn due(&self) -> bool {
        self.last_look
            .is_none_or(|at| at.elapsed() >= LIVENESS_INTERVAL)
    }

    /// Asks Glance about `task` and acts on the answer; true if a registration was sent.
    async fn look(
        &mut self,
        ctx: &JobContext,
        task: &str,
        location: &str,
    ) -> Result<bool, JobError> {
        self.last_look = Some(Instant::now());
        let verdict = import_watch::verdict(ctx, task, self.policy.after).await?;
        let register_past_lock = match verdict {
            Verdict::Alive => false,
            Verdict::Missing => {
                warn!(task, "Glance has no record of the task holding the import lock; registering again (Glance takes over a lock whose task is gone)");
                true
            }
            Verdict::Lost(evidence) => match self.policy.action {
                LostImportAction::Copy => {
                    // The image may have turned active between the two looks.
                    if still_locked_by(ctx, task).await? {
                        warn!(task, %evidence, "Glance lost the import; making the image by a full copy");
                        return Err(JobError::ImportLost { evidence });
                    }
                    false
                }
                LostImportAction::Wait => {
                    if !self.tried_past_lock {
                        warn!(task, %evidence, "Glance lost the import; waiting for Glance to let its lock expire");
                    }
                    !self.tried_past_lock
                }
            },
            Verdict::Unknown => !self.tried_past_lock,
        };
        if !register_past_lock {
            return Ok(false);
        }
        self.tried_past_lock = true;
        register(ctx, location).await?;
        Ok(true)
    }
}

/// Whether the image is still waiting under the lock of `task`.
async fn still_locked_by(ctx: &JobContext, task: &str) -> Result<bool, JobError> {
    let record = ctx.glance_image().await?;
    Ok(!record.is_active() && record.os_glance_import_task.as_deref() == Some(task))
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
    let message = match ctx.glance.task(task).await {
        Ok(TaskLookup::Found(record)) if record.failed() => {
            record.message.unwrap_or_else(|| "no message".to_string())
        }
        Ok(TaskLookup::Found(record)) => {
            format!("task ended '{}' with the image still queued", record.status)
        }
        Ok(TaskLookup::Missing | TaskLookup::Hidden) => {
            "its task record is not visible".to_string()
        }
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
