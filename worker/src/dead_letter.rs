//! The dead-letter consumer: takes jobs the fast path gave up on. For a fallback reason (or
//! exhausted retries) it removes what the fast path left, per the recorded state, and makes
//! the image by a full copy; anything it cannot finish goes to the parking lot with its
//! reason, history and last error, for an operator to inspect and replay.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::Channel;
use snapq_common::job::{now_ms, JobState};
use snapq_common::message::{reply_to_of, RpcFailure, SnapshotRequest};
use tracing::{error, info, info_span, warn, Instrument};

use crate::consumer::WorkerSettings;
use crate::context::JobContext;
use crate::delivery::{ack, hand_over, history, nack, DeadLetterReason, Held};
use crate::error::{Disposition, JobError};
use crate::lease::{JobLease, LeaseError};
use crate::{cleanup, fallback, reply};

/// Reasons the dead-letter consumer makes a full copy for; others are parked at once.
const FALLBACK_REASONS: [&str; 2] = ["fallback", "retries-exhausted"];

pub async fn handle(settings: &WorkerSettings, channel: &Channel, delivery: Delivery) {
    let held = Held::new(&delivery);
    let (request, mut state) = match crate::delivery::decode_job(&delivery) {
        Ok(decoded) => decoded,
        Err(bad) => {
            error!(error = %bad.detail, "parking a malformed message");
            // The work consumer answered the calls it dead-lettered itself (they carry its
            // reason); one that reached this queue another way is answered here.
            let answered = JobState::from_headers(delivery.properties.headers().as_ref())
                .is_ok_and(|s| s.reason.is_some());
            if !answered {
                if let Some(reply_to) = reply_to_of(&delivery.data) {
                    reply::send_to(channel, &reply_to, None, Some(bad.failure)).await;
                }
            }
            let state = JobState {
                reason: Some(DeadLetterReason::Malformed.name().into()),
                last_error: Some(bad.detail),
                ..JobState::fresh()
            };
            park(settings, channel, &held, &state).await;
            return;
        }
    };
    let job_id = state
        .job_id
        .clone()
        .unwrap_or_else(|| request.unique_id.clone());
    let span = info_span!("job", %job_id, image_id = %request.image_id, role = "dead-letter");
    async {
        let reason = state.reason.clone();
        // Anyone on the bus can publish here too: the same policy as on the fast path.
        if let Err(refusal) = settings.source_policy.check(&request.disk) {
            let error = JobError::from(refusal);
            error!(error = %error, disk = %request.disk, "refusing the request");
            if !reason.as_deref().is_some_and(was_answered) {
                reply::send(channel, &request, None, Some(reply::failure(&error))).await;
            }
            state.last_error = Some(error.to_string());
            state.reason = Some(DeadLetterReason::Refused.name().into());
            park(settings, channel, &held, &state).await;
            return;
        }
        let Some(reason) = reason.filter(|r| FALLBACK_REASONS.contains(&r.as_str())) else {
            warn!(reason = state.reason.as_deref().unwrap_or("none"), error = state.last_error.as_deref().unwrap_or(""), "parking the job");
            if state.reason.is_none() {
                // Dead-lettered by the broker itself (e.g. its delivery limit): nobody has
                // answered the caller yet.
                let failure = RpcFailure::new(
                    "SnapshotFailed",
                    "snapq.exceptions",
                    "the request was dead-lettered by the broker before snapq finished it; parked for an operator",
                );
                reply::send(channel, &request, None, Some(failure)).await;
            }
            park(settings, channel, &held, &state).await;
            return;
        };
        // One line an operator can act on: why the fast path was not used.
        warn!(
            %reason,
            cause = state.last_error.as_deref().unwrap_or("unknown"),
            disk = %request.disk,
            "falling back to a full copy"
        );
        let lease = match JobLease::for_job(settings, &request).await {
            Ok(lease) => lease,
            Err(LeaseError::Held) => {
                info!("another worker holds the job's lease; trying again shortly");
                tokio::time::sleep(Duration::from_secs(1)).await;
                nack(&delivery, true).await;
                return;
            }
            Err(LeaseError::Ceph(e)) => {
                error!(error = %e, "cannot take the job's lease; parking the job");
                let e = JobError::Ceph(e);
                state.last_error = Some(e.to_string());
                state.reason = Some("fallback-failed".into());
                reply::send(channel, &request, None, Some(reply::failure(&e))).await;
                park(settings, channel, &held, &state).await;
                return;
            }
        };
        let started = std::time::Instant::now();
        let result = run_fallback(settings, &request).await;
        lease.release(result.is_ok()).await;
        let took = started.elapsed();
        match result {
            Ok(report) => {
                let did = if report.is_some() {
                    "done"
                } else {
                    "already-done"
                };
                state.record(history(settings, "full_copy", took, did));
                let seconds = state
                    .started_ms
                    .map(|s| now_ms().saturating_sub(s) as f64 / 1000.0)
                    .unwrap_or(took.as_secs_f64());
                let mut result = reply::success_result(&request, seconds, &state);
                result["method"] = reply::METHOD_FALLBACK.into();
                if let Some(report) = report {
                    result["read_bytes"] = report.read.into();
                }
                reply::send(channel, &request, Some(result), None).await;
                ack(&delivery).await;
            }
            Err(e) => {
                error!(error = %e, "the full copy failed too; parking the job");
                state.last_error = Some(e.to_string());
                state.reason = Some(if e.disposition() == Disposition::Refuse {
                    DeadLetterReason::Refused.name().into()
                } else {
                    "fallback-failed".into()
                });
                reply::send(channel, &request, None, Some(reply::failure(&e))).await;
                park(settings, channel, &held, &state).await;
            }
        }
    }
    .instrument(span)
    .await
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

/// Moves the job to the parking lot (confirmed), then acknowledges it here.
async fn park(settings: &WorkerSettings, channel: &Channel, held: &Held<'_>, state: &JobState) {
    let parked = hand_over(channel, "", &settings.topology.parked_queue, held, state).await;
    if let Err(e) = parked {
        // Keep it in the dead-letter queue rather than lose it.
        warn!(error = %e, "could not park the job; leaving it in the dead-letter queue");
        tokio::time::sleep(Duration::from_secs(1)).await;
        nack(held.delivery, true).await;
    }
}

/// Whether the work consumer answered the caller when it dead-lettered a job for `reason`
/// (it does for every reason but the full copy's, which the full copy answers).
fn was_answered(reason: &str) -> bool {
    !FALLBACK_REASONS.contains(&reason)
}
