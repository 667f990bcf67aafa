//! The dead-letter role: takes jobs the fast path gave up on. For a fallback reason (or
//! exhausted retries) it removes what the fast path left, per the recorded state, and makes
//! the image by a full copy; anything it cannot finish goes to the parking lot with its
//! reason, history and last error, for an operator to inspect and replay.

use std::time::{Duration, Instant};

use lapin::message::Delivery;
use snapq_common::job::{now_ms, DeadLetterReason, JobState};
use snapq_common::message::{RpcFailure, SnapshotRequest};
use tracing::{error, info, info_span, warn, Instrument};

use crate::broker::JobMessage;
use crate::channels::Channels;
use crate::context::JobContext;
use crate::decode::decode_job;
use crate::error::{Disposition, JobError};
use crate::lease::{JobLease, LeaseError, Release};
use crate::settings::WorkerSettings;
use crate::{cleanup, fallback, gate, notify, reply};

fn job_id_of(request: &SnapshotRequest, state: &JobState) -> String {
    state
        .job_id
        .clone()
        .unwrap_or_else(|| request.unique_id.clone())
}

pub async fn handle(settings: &WorkerSettings, channels: &Channels, delivery: Delivery) {
    let job = JobMessage::new(settings, channels, &delivery);
    let (request, state) = match decode_job(&delivery) {
        Ok(decoded) => decoded,
        Err(bad) => {
            error!(error = %bad.detail, "parking a malformed message");
            // The work consumer answered the calls it dead-lettered itself (they carry its
            // reason); one that reached this queue another way is answered here.
            let answered = JobState::from_headers(delivery.properties.headers().as_ref())
                .is_ok_and(|s| s.reason.is_some());
            if !answered {
                job.reply_undecodable(bad.failure).await;
            }
            let mut state = JobState {
                last_error: Some(bad.detail),
                ..JobState::fresh()
            };
            state.set_reason(DeadLetterReason::Malformed);
            job.park(&state).await;
            return;
        }
    };
    let job_id = state
        .job_id
        .clone()
        .unwrap_or_else(|| request.unique_id.clone());
    let span = info_span!("job", %job_id, image_id = %request.image_id, role = "dead-letter");
    serve(settings, &job, &request, state)
        .instrument(span)
        .await
}

async fn serve(
    settings: &WorkerSettings,
    job: &JobMessage<'_>,
    request: &SnapshotRequest,
    mut state: JobState,
) {
    let reason = state.dead_letter_reason();
    // The work consumer answers every caller except those whose job it sends to the full copy.
    let answered = reason.is_some_and(|r| !r.wants_full_copy());
    // Anyone on the bus can publish here too: the same policy as on the fast path.
    if let Err(refusal) = settings.source_policy.check(&request.disk) {
        let error = JobError::from(refusal);
        error!(error = %error, disk = %request.disk, "refusing the request");
        if !answered {
            job.reply(request, None, Some(reply::failure(&error))).await;
        }
        state.last_error = Some(error.to_string());
        state.set_reason(DeadLetterReason::Refused);
        job.park_request(request, &state).await;
        return;
    }
    let Some(reason) = reason.filter(|r| r.wants_full_copy()) else {
        warn!(
            reason = state.reason.as_deref().unwrap_or("none"),
            error = state.last_error.as_deref().unwrap_or(""),
            "parking the job"
        );
        if state.reason.is_none() {
            // Dead-lettered by the broker itself (e.g. its delivery limit): nobody has
            // answered the caller yet.
            let failure = RpcFailure::new(
                "SnapshotFailed",
                "snapq.exceptions",
                "the request was dead-lettered by the broker before snapq finished it; parked for an operator",
            );
            job.reply(request, None, Some(failure)).await;
        }
        job.park_request(request, &state).await;
        return;
    };
    // The outage that used up the fast path's retries would fail the full copy too.
    if reason == DeadLetterReason::RetriesExhausted {
        if let Err(e) = settings.glance.get_image(request.image_id).await {
            let error = JobError::from(e);
            if error.disposition(settings.image_pool.name()) == Disposition::Retry {
                wait_out(settings, job, request, state, reason, error).await;
                return;
            }
        }
    }
    // One line an operator can act on: why the fast path was not used.
    warn!(
        reason = reason.name(),
        cause = state.last_error.as_deref().unwrap_or("unknown"),
        disk = %request.disk,
        "falling back to a full copy"
    );
    let job_id = state
        .job_id
        .clone()
        .unwrap_or_else(|| request.unique_id.clone());
    // Who asks for what, before the lease and before any cleanup: a request for another
    // project's image, or for an image another disk's job is making, touches nothing.
    let ctx = match JobContext::new(settings, request) {
        Ok(ctx) => ctx,
        Err(e) => {
            give_up(job, request, state, e).await;
            return;
        }
    };
    let checked = match gate::check_claim(&ctx, &settings.lease_pool).await {
        Ok(()) => gate::check_project(&ctx).await,
        Err(e) => Err(e),
    };
    if let Err(e) = checked {
        if e.disposition(settings.image_pool.name()) == Disposition::Retry {
            wait_out(settings, job, request, state, reason, e).await;
        } else {
            error!(error = %e, "refusing the full copy; touching nothing");
            give_up(job, request, state, e).await;
        }
        return;
    }
    let lease = match JobLease::for_job(
        settings,
        request.image_id,
        &job_id,
        &ctx.names.source.to_string(),
    )
    .await
    {
        Ok(lease) => lease,
        Err(LeaseError::Held) => {
            info!("another worker holds the job's lease; trying again shortly");
            tokio::time::sleep(Duration::from_secs(1)).await;
            job.nack(true).await;
            return;
        }
        Err(LeaseError::Ceph(e)) if e.is_transient() => {
            wait_out(settings, job, request, state, reason, JobError::Ceph(e)).await;
            return;
        }
        Err(LeaseError::Ceph(e)) => {
            error!(error = %e, "cannot take the job's lease; parking the job");
            give_up(job, request, state, JobError::Ceph(e)).await;
            return;
        }
    };
    if let Err(e) = gate::confirm_claim(&ctx, &lease).await {
        lease.release(Release::Continue).await;
        if e.disposition(settings.image_pool.name()) == Disposition::Retry {
            wait_out(settings, job, request, state, reason, e).await;
        } else {
            error!(error = %e, "refusing the full copy; touching nothing");
            give_up(job, request, state, e).await;
        }
        return;
    }
    let started = Instant::now();
    let result = run_fallback(ctx.under(lease.token()), &mut state).await;
    let passing = result.as_ref().err().is_some_and(|e| {
        e.disposition(settings.image_pool.name()) == Disposition::Retry
            && state.fallback_attempt < settings.max_attempts
    });
    // Done or parked, the job ends here; a passing failure comes back.
    lease
        .release(if passing {
            Release::Continue
        } else {
            Release::End
        })
        .await;
    let took = started.elapsed();
    match result {
        Ok(report) => {
            let did = if report.is_some() {
                "done"
            } else {
                "already-done"
            };
            state.record(settings.history("full_copy", took, did));
            let seconds = state
                .started_ms
                .map(|s| now_ms().saturating_sub(s) as f64 / 1000.0)
                .unwrap_or(took.as_secs_f64());
            let mut result = reply::success_result(request, seconds, &state);
            result["method"] = reply::METHOD_FALLBACK.into();
            if let Some(report) = report {
                result["read_bytes"] = report.read.into();
            }
            job.reply(request, Some(result), None).await;
            let bytes = report.map(|r| r.read);
            job.notify(
                request,
                notify::end(
                    request,
                    &job_id_of(request, &state),
                    reply::METHOD_FALLBACK,
                    seconds,
                    bytes,
                ),
            )
            .await;
            job.ack().await;
        }
        Err(e) if passing => wait_out(settings, job, request, state, reason, e).await,
        Err(e) => {
            error!(error = %e, "the full copy failed too; parking the job");
            give_up(job, request, state, e).await;
        }
    }
}

/// A passing failure (Glance or Ceph briefly unreachable): the job waits with backoff and comes
/// back to this queue, up to `--max-attempts` times, before it is parked.
async fn wait_out(
    settings: &WorkerSettings,
    job: &JobMessage<'_>,
    request: &SnapshotRequest,
    mut state: JobState,
    reason: DeadLetterReason,
    error: JobError,
) {
    if state.fallback_attempt >= settings.max_attempts {
        error!(error = %error, "the outage outlasted every attempt; parking the job");
        give_up(job, request, state, error).await;
        return;
    }
    state.fallback_attempt += 1;
    state.last_error = Some(error.to_string());
    let delay = fallback_retry_delay(state.fallback_attempt);
    warn!(error = %error, attempt = state.fallback_attempt, delay_ms = delay.as_millis() as u64, "a passing failure; the full copy waits and tries again");
    tokio::time::sleep(delay).await;
    job.dead_letter(state, reason).await;
}

/// 1 s, doubling, at most 60 s, with jitter.
fn fallback_retry_delay(attempt: u32) -> Duration {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt.saturating_sub(1) as usize)
        .unwrap_or(Duration::from_secs(60))
}

/// Answers the caller with `error` and parks the job: refused, or its full copy failed.
async fn give_up(
    job: &JobMessage<'_>,
    request: &SnapshotRequest,
    mut state: JobState,
    error: JobError,
) {
    state.last_error = Some(error.to_string());
    state.set_reason(if error.is_refusal() {
        DeadLetterReason::Refused
    } else {
        DeadLetterReason::FallbackFailed
    });
    job.reply(request, None, Some(reply::failure(&error))).await;
    job.park_request(request, &state).await;
}

async fn run_fallback(
    ctx: JobContext,
    state: &mut JobState,
) -> Result<Option<fallback::CopyReport>, JobError> {
    // Is the image waiting for this copy? Asked before cleanup: a refused copy removes nothing.
    fallback::admit(&ctx).await?;
    state.leftovers = cleanup::remove_partial_state(&ctx).await?;
    let copied = fallback::full_copy(&ctx).await;
    if copied.is_err() {
        // Leave nothing behind; the Glance image stays queued, ready for a replay.
        if let Err(e) = fallback::remove_fallback_snapshot(&ctx).await {
            warn!(error = %e, "could not remove the fallback snapshot");
        }
    }
    copied
}
