//! What happens to a job whose step failed: a transient failure goes back through a retry
//! tier; anything else (or a transient one past its attempt budget) cleans up what this job
//! made and dead-letters the job with its reason, answering the caller unless the full copy
//! will.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use snapq_common::job::{DeadLetterReason, JobState, Step};
use snapq_common::message::SnapshotRequest;
use snapq_common::rbd::run_blocking;
use tracing::{error, warn};

use crate::broker::JobMessage;
use crate::context::JobContext;
use crate::error::{Disposition, JobError};
use crate::lease::{JobLease, Release};
use crate::settings::WorkerSettings;
use crate::{cleanup, reply};

/// Disposes of a job whose `step` failed with `error`. `leased`: the job's lease, if this
/// delivery took it, and the context under it; cleanup runs only under the lease, which is
/// then let go as the job's fate says (kept for the dead-letter consumer, removed when the job
/// ends here).
pub async fn fail(
    settings: &WorkerSettings,
    job: &JobMessage<'_>,
    request: &SnapshotRequest,
    mut state: JobState,
    step: Step,
    error: JobError,
    leased: Option<(JobLease, JobContext)>,
) {
    state.last_error = Some(error.to_string());
    if error.needs_reconnect() {
        reconnect_ceph(settings).await;
    }
    let disposition = error.disposition(settings.image_pool.name());
    if disposition == Disposition::Retry && state.attempt < settings.max_attempts {
        let delay = retry_delay(state.attempt);
        warn!(error = %error, attempt = state.attempt, delay_ms = delay.as_millis() as u64, "transient failure; will retry");
        state.attempt += 1;
        job.retry_after(&state, delay).await;
        if let Some((lease, _)) = leased {
            lease.release(Release::Continue).await;
        }
        return;
    }
    let reason = match disposition {
        Disposition::Retry => DeadLetterReason::RetriesExhausted,
        Disposition::Fallback => DeadLetterReason::Fallback,
        Disposition::Park => DeadLetterReason::Park,
        Disposition::Refuse => DeadLetterReason::Refused,
    };
    if error.must_not_clean_up() {
        error!(error = %error, step = step.name(), reason = reason.name(), "job refused; touching nothing and dead-lettering it");
    } else {
        error!(error = %error, step = step.name(), reason = reason.name(), "job failed; cleaning up and dead-lettering it");
        state.leftovers = match &leased {
            Some((_, ctx)) => match cleanup::remove_partial_state(ctx).await {
                Ok(left) => left,
                Err(cleanup_error) => {
                    error!(error = %cleanup_error, "cleanup failed; the job's record keeps what may remain");
                    cleanup::possible_leftovers(ctx)
                }
            },
            // No lease, no cleanup: whatever an earlier delivery made stays on the record.
            None => match JobContext::new(settings, request) {
                Ok(ctx) if state.step_done.is_some() => cleanup::possible_leftovers(&ctx),
                _ => Vec::new(),
            },
        };
    }
    // A job going to the full-copy fallback is answered by the dead-letter consumer.
    if matches!(reason, DeadLetterReason::Park | DeadLetterReason::Refused) {
        job.reply(request, None, Some(reply::failure(&error))).await;
    }
    job.dead_letter(state, reason).await;
    if let Some((lease, _)) = leased {
        // The full copy takes the lease up again; any other reason ends the job here.
        let how = if reason.wants_full_copy() {
            Release::Continue
        } else {
            Release::End
        };
        lease.release(how).await;
    }
}

/// Exponential backoff with full jitter for transient failures.
fn retry_delay(attempt: u32) -> Duration {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(120))
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt.saturating_sub(1) as usize)
        .unwrap_or(Duration::from_secs(120))
}

/// Replaces the worker's Ceph connection after the cluster blocklisted it. Many jobs fail at
/// once then; one reconnect every few seconds serves them all.
async fn reconnect_ceph(settings: &WorkerSettings) {
    const AT_MOST_EVERY: Duration = Duration::from_secs(5);
    static LAST: Mutex<Option<Instant>> = Mutex::new(None);
    {
        let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_some_and(|at| at.elapsed() < AT_MOST_EVERY) {
            return;
        }
        *last = Some(Instant::now());
    }
    let cluster = settings.cluster.clone();
    match run_blocking(move || cluster.reconnect()).await {
        Ok(()) => warn!("this worker was blocklisted by Ceph; reconnected with a new client"),
        Err(e) => {
            error!(error = %e, "this worker was blocklisted by Ceph and cannot reconnect yet")
        }
    }
}
