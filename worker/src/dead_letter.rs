//! The dead-letter role: takes jobs the fast path gave up on. For a fallback reason (or
//! exhausted retries) it removes what the fast path left, per the recorded state, and makes
//! the image by a full copy; anything it cannot finish goes to the parking lot with its
//! reason, history and last error, for an operator to inspect and replay.

use std::time::{Duration, Instant};

use lapin::message::Delivery;
use lapin::Channel;
use snapq_common::job::{now_ms, DeadLetterReason, JobState};
use snapq_common::message::{RpcFailure, SnapshotRequest};
use tracing::{error, info, info_span, warn, Instrument};

use crate::broker::JobMessage;
use crate::context::JobContext;
use crate::decode::decode_job;
use crate::error::{Disposition, JobError};
use crate::lease::{JobLease, LeaseError};
use crate::settings::WorkerSettings;
use crate::{cleanup, fallback, reply};

pub async fn handle(settings: &WorkerSettings, channel: &Channel, delivery: Delivery) {
    let job = JobMessage::new(settings, channel, &delivery);
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
        job.park(&state).await;
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
        job.park(&state).await;
        return;
    };
    // One line an operator can act on: why the fast path was not used.
    warn!(
        reason = reason.name(),
        cause = state.last_error.as_deref().unwrap_or("unknown"),
        disk = %request.disk,
        "falling back to a full copy"
    );
    let lease = match JobLease::for_job(settings, request).await {
        Ok(lease) => lease,
        Err(LeaseError::Held) => {
            info!("another worker holds the job's lease; trying again shortly");
            tokio::time::sleep(Duration::from_secs(1)).await;
            job.nack(true).await;
            return;
        }
        Err(LeaseError::Ceph(e)) => {
            error!(error = %e, "cannot take the job's lease; parking the job");
            give_up(job, request, state, JobError::Ceph(e)).await;
            return;
        }
    };
    let started = Instant::now();
    let result = run_fallback(settings, request).await;
    lease.release(result.is_ok()).await;
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
            job.ack().await;
        }
        Err(e) => {
            error!(error = %e, "the full copy failed too; parking the job");
            give_up(job, request, state, e).await;
        }
    }
}

/// Answers the caller with `error` and parks the job: refused, or its full copy failed.
async fn give_up(
    job: &JobMessage<'_>,
    request: &SnapshotRequest,
    mut state: JobState,
    error: JobError,
) {
    state.last_error = Some(error.to_string());
    state.set_reason(if error.disposition() == Disposition::Refuse {
        DeadLetterReason::Refused
    } else {
        DeadLetterReason::FallbackFailed
    });
    job.reply(request, None, Some(reply::failure(&error))).await;
    job.park(&state).await;
}

async fn run_fallback(
    settings: &WorkerSettings,
    request: &SnapshotRequest,
) -> Result<Option<fallback::CopyReport>, JobError> {
    let ctx = JobContext::new(settings, request)?;
    cleanup::remove_partial_state(&ctx).await?;
    let copied = fallback::full_copy(&ctx).await;
    if copied.is_err() {
        // Leave nothing behind; the Glance image stays queued, ready for a replay.
        if let Err(e) = fallback::remove_fallback_snapshot(&ctx).await {
            warn!(error = %e, "could not remove the fallback snapshot");
        }
    }
    copied
}
