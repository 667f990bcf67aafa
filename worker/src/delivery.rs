//! One delivery of a job: run the next step, then checkpoint, retry or dead-letter.
//!
//! A delivery runs exactly one step under the job's lease. When the step is done the job is
//! re-published with its new state in the headers (confirmed by the broker), and only then
//! is the delivery acknowledged; the next step runs from that new message, on whichever
//! worker takes it. A crash anywhere leaves either the old message (the step re-runs and
//! finds its outcome already there) or the new one (the job carries on).

use std::time::{Duration, Instant};

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Channel;
use snapq_common::amqp::{oslo_properties, publish_confirmed, AmqpError};
use snapq_common::job::{now_ms, HistoryEntry, JobState, Step};
use snapq_common::message::{reply_to_of, without_secrets, RpcFailure, SnapshotRequest};
use tracing::{error, info, info_span, warn, Instrument};

use crate::consumer::WorkerSettings;
use crate::context::JobContext;
use crate::error::{Disposition, JobError};
use crate::lease::{JobLease, LeaseError};
use crate::{cleanup, failpoint, gate, reply, steps};

/// Why a job left the work queue for the dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    Malformed,
    Fallback,
    Park,
    Refused,
    RetriesExhausted,
}

impl DeadLetterReason {
    pub fn name(self) -> &'static str {
        match self {
            DeadLetterReason::Malformed => "malformed",
            DeadLetterReason::Fallback => "fallback",
            DeadLetterReason::Park => "park",
            DeadLetterReason::Refused => "refused",
            DeadLetterReason::RetriesExhausted => "retries-exhausted",
        }
    }
}

/// A delivery as snapq holds it: the broker's message and its body without the caller's
/// secrets, which is what every republished copy carries (checkpoints, retries, dead letters).
pub(crate) struct Held<'a> {
    pub delivery: &'a Delivery,
    pub body: Vec<u8>,
}

impl<'a> Held<'a> {
    pub fn new(delivery: &'a Delivery) -> Held<'a> {
        Held {
            delivery,
            body: without_secrets(&delivery.data),
        }
    }
}

/// Why a delivery cannot be read: the detail names the field or header; `failure` is what an
/// oslo caller gets back.
pub(crate) struct Undecodable {
    pub detail: String,
    pub failure: RpcFailure,
}

/// The request and its job state from a delivery, or why they cannot be read.
pub(crate) fn decode_job(delivery: &Delivery) -> Result<(SnapshotRequest, JobState), Undecodable> {
    let request = SnapshotRequest::decode(&delivery.data).map_err(|e| Undecodable {
        detail: e.to_string(),
        failure: e.rpc_failure(),
    })?;
    let state = JobState::from_headers(delivery.properties.headers().as_ref()).map_err(|e| {
        let detail = e.to_string();
        Undecodable {
            failure: RpcFailure::new("InvalidRequest", "snapq.exceptions", detail.clone()),
            detail,
        }
    })?;
    Ok((request, state))
}

pub async fn handle(settings: &WorkerSettings, channel: &Channel, delivery: Delivery) {
    let held = Held::new(&delivery);
    let (request, mut state) = match decode_job(&delivery) {
        Ok(decoded) => decoded,
        Err(bad) => {
            // Nothing can make this message valid: answer a `call` at once, then dead-letter
            // the message (without secrets) untouched otherwise; Ceph is never touched.
            error!(error = %bad.detail, "dead-lettering a malformed request");
            if let Some(reply_to) = reply_to_of(&delivery.data) {
                reply::send_to(channel, &reply_to, None, Some(bad.failure)).await;
            }
            let state = JobState {
                last_error: Some(bad.detail),
                ..JobState::fresh()
            };
            dead_letter(settings, channel, &held, state, DeadLetterReason::Malformed).await;
            return;
        }
    };
    let job_id = state
        .job_id
        .get_or_insert_with(|| request.unique_id.clone())
        .clone();
    state.started_ms.get_or_insert_with(now_ms);
    let Some(step) = state.next_step() else {
        // Every step is done: a leftover duplicate of a finished job.
        info!(%job_id, "job already finished; dropping the duplicate");
        ack(&delivery).await;
        return;
    };
    let span = info_span!("job", %job_id, image_id = %request.image_id, step = step.name(), attempt = state.attempt);
    async {
        // Who may ask for what, before anything (even the lease) touches Ceph.
        if let Err(refusal) = settings.source_policy.check(&request.disk) {
            let error = JobError::from(refusal);
            error!(error = %error, disk = %request.disk, "refusing the request");
            state.last_error = Some(error.to_string());
            reply::send(channel, &request, None, Some(reply::failure(&error))).await;
            dead_letter(settings, channel, &held, state, DeadLetterReason::Refused).await;
            return;
        }
        run_step(settings, channel, &held, &request, state, step).await
    }
    .instrument(span)
    .await
}

async fn run_step(
    settings: &WorkerSettings,
    channel: &Channel,
    held: &Held<'_>,
    request: &SnapshotRequest,
    mut state: JobState,
    step: Step,
) {
    let ctx = match JobContext::new(settings, request) {
        Ok(ctx) => ctx,
        Err(e) => {
            retry_or_dead_letter(settings, channel, held, request, state, step, e).await;
            return;
        }
    };
    if step == Step::SnapshotSource {
        // A request for another project's image is refused before the lease, which would
        // otherwise be the one thing it left in Ceph.
        if let Err(e) = gate::check_project(&ctx).await {
            retry_or_dead_letter(settings, channel, held, request, state, step, e).await;
            return;
        }
    }
    let lease_started = Instant::now();
    let lease = match JobLease::for_job(settings, request).await {
        Ok(lease) => lease,
        Err(LeaseError::Held) => {
            // Another worker runs this job right now (a duplicate held): come back later,
            // without spending the step's attempt budget.
            info!("another worker holds the job's lease; requeueing for later");
            requeue_after(settings, channel, held, &state, Duration::from_millis(500)).await;
            return;
        }
        Err(LeaseError::Ceph(e)) => {
            warn!(error = %e, "cannot take the job's lease; retrying later");
            retry_or_dead_letter(
                settings,
                channel,
                held,
                request,
                state,
                step,
                JobError::Ceph(e),
            )
            .await;
            return;
        }
    };
    if step == Step::SnapshotSource && state.step_done.is_none() && state.history.is_empty() {
        info!(disk = %request.disk, "job started");
    } else {
        info!(
            resume_after = state.step_done.map(|s| s.name()).unwrap_or("nothing"),
            "resuming job"
        );
    }
    tracing::debug!(
        ms = lease_started.elapsed().as_secs_f64() * 1e3,
        "lease taken"
    );
    failpoint::hit(&format!("before:{}", step.name()));
    let started = Instant::now();
    let result = tokio::select! {
        result = steps::ensure(step, &ctx) => result,
        _ = lease.lost() => Err(JobError::LeaseLost),
    };
    let took = started.elapsed();
    match result {
        Ok(report) => {
            info!(
                did = report.name(),
                seconds = took.as_secs_f64(),
                "step complete"
            );
            failpoint::hit(&format!("after:{}", step.name()));
            state.record(history(settings, step.name(), took, report.name()));
            if step == Step::SnapshotSource {
                let ctx_names =
                    crate::names::ArtifactNames::for_request(request, settings.image_pool.name());
                state.fsid = Some(settings.cluster.fsid().to_string());
                state.source_snapshot = Some(ctx_names.source_snapshot_spec());
                state.image = Some(ctx_names.image_spec());
            }
            // The step is done and idempotent: the lease is released while the checkpoint is
            // published, so the next step (maybe on another worker) does not wait for it.
            match step.next() {
                Some(_) => {
                    let next = state.advanced(step);
                    let publishing = Instant::now();
                    let (published, ()) = tokio::join!(
                        publish_state(
                            channel,
                            &settings.topology.request_exchange,
                            &settings.topology.request_routing_key,
                            held,
                            &next
                        ),
                        lease.release(false),
                    );
                    if let Err(e) = published {
                        // Not acknowledged: the broker redelivers the old message and the step,
                        // already done, is skipped.
                        warn!(error = %e, "could not publish the checkpoint; the step will be re-checked");
                        nack(held.delivery, true).await;
                    } else {
                        tracing::debug!(
                            ms = publishing.elapsed().as_secs_f64() * 1e3,
                            "checkpoint published, lease released"
                        );
                        failpoint::hit(&format!("published:{}", step.name()));
                        ack(held.delivery).await;
                    }
                }
                None => {
                    lease.release(true).await;
                    let seconds = state
                        .started_ms
                        .map(|s| now_ms().saturating_sub(s) as f64 / 1000.0)
                        .unwrap_or(took.as_secs_f64());
                    info!(seconds, "job done: image is active");
                    reply::send(
                        channel,
                        request,
                        Some(reply::success_result(request, seconds, &state)),
                        None,
                    )
                    .await;
                    ack(held.delivery).await;
                }
            }
        }
        Err(JobError::FlattenInProgress { percent }) => {
            info!(percent, "flatten still running; checkpointing its progress");
            state.flatten_progress = Some(percent);
            requeue_after(settings, channel, held, &state, Duration::from_millis(500)).await;
            lease.release(false).await;
        }
        Err(e) => {
            state.record(history(settings, step.name(), took, "failed"));
            lease.release(false).await;
            retry_or_dead_letter(settings, channel, held, request, state, step, e).await;
        }
    }
}

/// A history line for `step` (a step name, or `full_copy`) done by this worker.
pub(crate) fn history(
    settings: &WorkerSettings,
    step: &str,
    took: Duration,
    did: &str,
) -> HistoryEntry {
    HistoryEntry {
        step: step.to_string(),
        worker: settings.name.clone(),
        at_ms: now_ms(),
        seconds: took.as_secs_f64(),
        did: did.to_string(),
    }
}

async fn retry_or_dead_letter(
    settings: &WorkerSettings,
    channel: &Channel,
    held: &Held<'_>,
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
        requeue_after(settings, channel, held, &state, delay).await;
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
        reply::send(channel, request, None, Some(reply::failure(&error))).await;
    }
    dead_letter(settings, channel, held, state, reason).await;
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

/// Publishes the job (same body, `state` in its headers) to the retry tier that waits at
/// least `delay`, then acknowledges this delivery.
async fn requeue_after(
    settings: &WorkerSettings,
    channel: &Channel,
    held: &Held<'_>,
    state: &JobState,
    delay: Duration,
) {
    let tier = settings.topology.retry_queue_for(delay);
    if let Err(e) = hand_over(channel, "", &tier.name, held, state).await {
        warn!(error = %e, "could not publish to the retry queue; requeueing directly");
        nack(held.delivery, true).await;
    }
}

/// Publishes the job to the dead-letter exchange with its reason, then acknowledges it.
async fn dead_letter(
    settings: &WorkerSettings,
    channel: &Channel,
    held: &Held<'_>,
    mut state: JobState,
    reason: DeadLetterReason,
) {
    state.reason = Some(reason.name().to_string());
    let topology = &settings.topology;
    let handed_over = hand_over(
        channel,
        &topology.dead_letter_exchange,
        &topology.dead_letter_routing_key,
        held,
        &state,
    )
    .await;
    if let Err(e) = handed_over {
        // Rejecting routes it to the same dead-letter exchange through the broker.
        warn!(error = %e, "could not publish to the dead-letter exchange; rejecting instead");
        nack(held.delivery, false).await;
    }
}

/// Moves the delivery's job, with `state` in its headers, to `exchange`/`routing_key`:
/// publishes it (confirmed), then acknowledges this delivery. On a publish error the delivery
/// is left unacknowledged for the caller to decide where the job goes instead.
pub(crate) async fn hand_over(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    held: &Held<'_>,
    state: &JobState,
) -> Result<(), AmqpError> {
    publish_state(channel, exchange, routing_key, held, state).await?;
    ack(held.delivery).await;
    Ok(())
}

async fn publish_state(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    held: &Held<'_>,
    state: &JobState,
) -> Result<(), AmqpError> {
    publish_confirmed(
        channel,
        exchange,
        routing_key,
        &held.body,
        oslo_properties().with_headers(state.to_headers()),
    )
    .await
}

pub(crate) async fn ack(delivery: &Delivery) {
    if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
        // The broker will redeliver; the job's steps are idempotent.
        warn!(error = %e, "ack failed; the job will be redelivered");
    }
}

pub(crate) async fn nack(delivery: &Delivery, requeue: bool) {
    if let Err(e) = delivery
        .nack(BasicNackOptions {
            requeue,
            multiple: false,
        })
        .await
    {
        warn!(error = %e, requeue, "nack failed; the broker will redeliver the job");
    }
}
