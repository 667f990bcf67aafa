//! The work role: one delivery of a job runs its next step.
//!
//! A delivery runs exactly one step under the job's lease. When the step is done the job is
//! re-published with its new state in the headers (confirmed by the broker), and only then
//! is the delivery acknowledged; the next step runs from that new message, on whichever
//! worker takes it. A crash anywhere leaves either the old message (the step re-runs and
//! finds its outcome already there) or the new one (the job carries on).

use std::time::{Duration, Instant};

use lapin::message::Delivery;
use snapq_common::job::{now_ms, DeadLetterReason, JobState, Step};
use snapq_common::message::SnapshotRequest;
use tracing::{error, info, info_span, warn, Instrument};

use crate::broker::JobMessage;
use crate::channels::Channels;
use crate::context::JobContext;
use crate::decode::decode_job;
use crate::error::JobError;
use crate::failure::fail;
use crate::lease::{JobLease, LeaseError, Release};
use crate::settings::WorkerSettings;
use crate::{failpoint, gate, notify, reply, steps};

pub async fn handle(settings: &WorkerSettings, channels: &Channels, delivery: Delivery) {
    let job = JobMessage::new(settings, channels, &delivery);
    let (request, mut state) = match decode_job(&delivery) {
        Ok(decoded) => decoded,
        Err(bad) => {
            // Nothing can make this message valid: answer a `call` at once, then dead-letter
            // the message (without secrets), never touching Ceph.
            error!(error = %bad.detail, "dead-lettering a malformed request");
            job.reply_undecodable(bad.failure).await;
            let state = JobState {
                last_error: Some(bad.detail),
                ..JobState::fresh()
            };
            job.dead_letter(state, DeadLetterReason::Malformed).await;
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
        job.ack().await;
        return;
    };
    let span = info_span!("job", %job_id, image_id = %request.image_id, step = step.name(), attempt = state.attempt);
    async {
        // Who may ask for what, before anything (even the lease) touches Ceph.
        if let Err(refusal) = settings.source_policy.check(&request.disk) {
            let error = JobError::from(refusal);
            error!(error = %error, disk = %request.disk, "refusing the request");
            state.last_error = Some(error.to_string());
            job.reply(&request, None, Some(reply::failure(&error)))
                .await;
            job.dead_letter(state, DeadLetterReason::Refused).await;
            return;
        }
        run_step(settings, &job, &request, state, step).await
    }
    .instrument(span)
    .await
}

async fn run_step(
    settings: &WorkerSettings,
    job: &JobMessage<'_>,
    request: &SnapshotRequest,
    mut state: JobState,
    step: Step,
) {
    let ctx = match JobContext::new(settings, request) {
        Ok(ctx) => ctx,
        Err(e) => {
            fail(settings, job, request, state, step, e, None).await;
            return;
        }
    };
    // A request for an image another disk's job is making is answered now, not once that
    // job lets go of the lease.
    if let Err(e) = gate::check_claim(&ctx, &settings.lease_pool).await {
        fail(settings, job, request, state, step, e, None).await;
        return;
    }
    if step == Step::SnapshotSource {
        // A request for another project's image is refused before the lease, which would
        // otherwise be the one thing it left in Ceph.
        if let Err(e) = gate::check_project(&ctx).await {
            fail(settings, job, request, state, step, e, None).await;
            return;
        }
    }
    let lease_started = Instant::now();
    let job_id = state.job_id.clone().unwrap_or_default();
    let disk = ctx.names.source.to_string();
    let lease = match JobLease::for_job(settings, request.image_id, &job_id, &disk).await {
        Ok(lease) => lease,
        Err(LeaseError::Held) => {
            // Another worker runs this job right now (a duplicate held): come back later,
            // without spending the step's attempt budget.
            info!("another worker holds the job's lease; requeueing for later");
            job.retry_after(&state, Duration::from_millis(500)).await;
            return;
        }
        Err(LeaseError::Ceph(e)) => {
            warn!(error = %e, "cannot take the job's lease; retrying later");
            fail(settings, job, request, state, step, JobError::Ceph(e), None).await;
            return;
        }
    };
    // Two requests for one image from different disks may both pass the check above; the
    // claim under the lock decides, and the loser leaves the winner's record alone.
    if let Err(e) = gate::confirm_claim(&ctx, &lease).await {
        lease.release(Release::Continue).await;
        fail(settings, job, request, state, step, e, None).await;
        return;
    }
    // A copy of the job that is behind what the lease object recorded is stale: its
    // acknowledgement was lost after its checkpoint went out, and the job goes on from that
    // checkpoint. Running it too would run the job twice at once.
    match lease.progress().await {
        Ok(Some(recorded)) if state.step_done < Some(recorded) => {
            info!(
                recorded = recorded.name(),
                "a stale copy of a job that got further; dropping it"
            );
            lease.release(Release::Continue).await;
            job.ack().await;
            return;
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot read the job's recorded progress; going on"),
    }
    let ctx = ctx.under(lease.token());
    if step == Step::SnapshotSource && state.step_done.is_none() && state.history.is_empty() {
        info!(disk = %request.disk, "job started");
        job.notify(request, notify::start(request, &job_id)).await;
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
            state.record(settings.history(step.name(), took, report.name()));
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
                    // The progress record goes on the lease object only once the checkpoint
                    // is safely out: a record ahead of every message would drop the job.
                    let published = job.publish_checkpoint(&next).await;
                    lease
                        .release(if published.is_ok() {
                            Release::After(step)
                        } else {
                            Release::Continue
                        })
                        .await;
                    if let Err(e) = published {
                        // Not acknowledged: the broker redelivers the old message and the step,
                        // already done, is skipped.
                        warn!(error = %e, "could not publish the checkpoint; the step will be re-checked");
                        job.nack(true).await;
                    } else {
                        tracing::debug!(
                            ms = publishing.elapsed().as_secs_f64() * 1e3,
                            "checkpoint published, lease released"
                        );
                        failpoint::hit(&format!("published:{}", step.name()));
                        job.ack().await;
                    }
                }
                None => {
                    lease.release(Release::End).await;
                    let seconds = state
                        .started_ms
                        .map(|s| now_ms().saturating_sub(s) as f64 / 1000.0)
                        .unwrap_or(took.as_secs_f64());
                    info!(seconds, "job done: image is active");
                    job.reply(
                        request,
                        Some(reply::success_result(request, seconds, &state)),
                        None,
                    )
                    .await;
                    if settings.notifications.enabled {
                        let bytes = stored_bytes(&ctx).await;
                        let event =
                            notify::end(request, &job_id, reply::METHOD_DIRECT, seconds, bytes);
                        job.notify(request, event).await;
                    }
                    job.ack().await;
                }
            }
        }
        Err(JobError::FlattenInProgress { percent }) => {
            info!(percent, "flatten still running; checkpointing its progress");
            state.flatten_progress = Some(percent);
            job.retry_after(&state, Duration::from_millis(500)).await;
            lease.release(Release::Continue).await;
        }
        // Glance's import is under way, not failed: come back without spending an attempt.
        Err(JobError::ImportInProgress { task }) => {
            info!(%task, "Glance is still importing; checkpointing the wait");
            job.retry_after(&state, Duration::from_secs(2)).await;
            lease.release(Release::Continue).await;
        }
        Err(e) => {
            state.record(settings.history(step.name(), took, "failed"));
            fail(settings, job, request, state, step, e, Some((lease, ctx))).await;
        }
    }
}

/// Bytes the finished image holds (the allocated extents of `images/<id>@snap`), if Ceph
/// says; for the end notification.
async fn stored_bytes(ctx: &JobContext) -> Option<u64> {
    let (pool, name) = (ctx.image_pool.clone(), ctx.names.image.clone());
    snapq_common::rbd::run_blocking(move || {
        pool.open_read_only(&name, Some(crate::names::IMAGE_SNAPSHOT))?
            .used_bytes()
    })
    .await
    .ok()
}
