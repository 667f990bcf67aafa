//! What happens to a job whose step failed: a transient failure goes back through a retry
//! tier; anything else (or a transient one past its attempt budget) cleans up what this job
//! made and dead-letters the job with its reason, answering the caller unless the full copy
//! will.

use std::time::Duration;

use snapq_common::job::{DeadLetterReason, JobState, Step};
use snapq_common::message::SnapshotRequest;
use tracing::{error, warn};

use crate::broker::JobMessage;
use crate::context::JobContext;
use crate::error::{Disposition, JobError};
use crate::settings::WorkerSettings;
use crate::{cleanup, reply};

/// Disposes of a job whose `step` failed with `error`.
pub async fn fail(
    settings: &WorkerSettings,
    job: &JobMessage<'_>,
    request: &SnapshotRequest,
    mut state: JobState,
    step: Step,
    error: JobError,
) {
    state.last_error = Some(error.to_string());
    let disposition = error.disposition();
    if disposition == Disposition::Retry && state.attempt < settings.max_attempts {
        let delay = retry_delay(state.attempt);
        warn!(error = %error, attempt = state.attempt, delay_ms = delay.as_millis() as u64, "transient failure; will retry");
        state.attempt += 1;
        job.retry_after(&state, delay).await;
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
        if let Ok(ctx) = JobContext::new(settings, request) {
            if let Err(cleanup_error) = cleanup::remove_partial_state(&ctx).await {
                error!(error = %cleanup_error, "cleanup failed; the dead-letter consumer will retry it");
            }
        }
    }
    // A job going to the full-copy fallback is answered by the dead-letter consumer.
    if matches!(reason, DeadLetterReason::Park | DeadLetterReason::Refused) {
        job.reply(request, None, Some(reply::failure(&error))).await;
    }
    job.dead_letter(state, reason).await;
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
