//! `snapq jobs`: the parking lot, for operators. Jobs are read with `basic.get` and put back
//! (requeued) unless replayed or purged, so looking never loses a job.

use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use lapin::Channel;
use snapq_common::amqp::{oslo_properties, publish_confirmed, AmqpError, Topology};
use snapq_common::job::{DeadLetterReason, JobState};
use snapq_common::message::{without_secrets, SnapshotRequest};

/// A parked job as read from the queue.
pub struct ParkedJob {
    pub message: BasicGetMessage,
    pub request: Option<SnapshotRequest>,
    pub state: JobState,
}

impl ParkedJob {
    pub fn id(&self) -> String {
        self.state
            .job_id
            .clone()
            .or_else(|| self.request.as_ref().map(|r| r.unique_id.clone()))
            .unwrap_or_else(|| format!("message-{}", self.message.delivery.delivery_tag))
    }
}

/// Where a replayed job goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayMode {
    /// Back to the work queue: the fast path from the first step.
    Direct,
    /// Straight to the dead-letter consumer's full copy.
    Fallback,
}

/// Takes every parked job off the queue (unacknowledged: they return when `channel` closes
/// or `put_back` runs).
pub async fn take_all(channel: &Channel, topology: &Topology) -> Result<Vec<ParkedJob>, AmqpError> {
    let mut jobs = Vec::new();
    while let Some(message) = channel
        .basic_get(
            topology.parked_queue.as_str().into(),
            BasicGetOptions::default(),
        )
        .await
        .map_err(|source| AmqpError::Broker {
            op: "read the parking lot",
            source,
        })?
    {
        let request = SnapshotRequest::decode(&message.delivery.data).ok();
        let state = JobState::from_headers(message.delivery.properties.headers().as_ref())
            .unwrap_or_else(|e| JobState {
                last_error: Some(e.to_string()),
                ..JobState::fresh()
            });
        jobs.push(ParkedJob {
            message,
            request,
            state,
        });
    }
    Ok(jobs)
}

/// Returns jobs to the parking lot.
pub async fn put_back(jobs: Vec<ParkedJob>) {
    for job in jobs {
        let _ = job
            .message
            .delivery
            .nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await;
    }
}

/// Drops a job for good.
pub async fn purge(job: ParkedJob) -> Result<(), AmqpError> {
    job.message
        .delivery
        .ack(BasicAckOptions::default())
        .await
        .map_err(|source| AmqpError::Broker {
            op: "purge",
            source,
        })?;
    Ok(())
}

/// Sends a job back with a fresh attempt budget and one more replay, then removes it from
/// the parking lot (only once the broker has confirmed the new copy).
pub async fn replay(
    channel: &Channel,
    topology: &Topology,
    job: ParkedJob,
    mode: ReplayMode,
) -> Result<(), AmqpError> {
    let previous = &job.state;
    let state = JobState {
        job_id: Some(job.id()),
        started_ms: previous.started_ms,
        history: previous.history.clone(),
        replays: previous.replays + 1,
        reason: match mode {
            ReplayMode::Direct => None,
            ReplayMode::Fallback => Some(DeadLetterReason::Fallback.name().into()),
        },
        last_error: previous.last_error.clone(),
        ..JobState::fresh()
    };
    let (exchange, routing_key) = match mode {
        ReplayMode::Direct => (&topology.request_exchange, &topology.request_routing_key),
        ReplayMode::Fallback => (
            &topology.dead_letter_exchange,
            &topology.dead_letter_routing_key,
        ),
    };
    publish_confirmed(
        channel,
        exchange,
        routing_key,
        // Parked copies carry no secrets; one parked by an older snapq might.
        &without_secrets(&job.message.delivery.data),
        oslo_properties().with_headers(state.to_headers()),
    )
    .await?;
    job.message
        .delivery
        .ack(BasicAckOptions::default())
        .await
        .map_err(|source| AmqpError::Broker {
            op: "remove the replayed job",
            source,
        })?;
    Ok(())
}
