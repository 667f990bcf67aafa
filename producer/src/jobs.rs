//! `snapq jobs`: the parking lot, for operators. Jobs are read with `basic.get` and put back
//! (requeued) unless replayed or purged, so looking never loses a job.
//!
//! The parking lot is a durable classic queue (see `snapq_common::amqp`'s topology): a
//! requeued message goes back to its place, with nothing counted, so any number of looks
//! leaves every job in place, in order, with its headers. (On a quorum queue each put-back
//! would count as a delivery, and RabbitMQ 4's default limit would drop a job after 20 looks.)
//! Every job is taken before any is put back, so one look sees each job once.

use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable};
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
        let headers = message.delivery.properties.headers().as_ref();
        let mut state = JobState::from_headers(headers).unwrap_or_else(|e| JobState {
            last_error: Some(e.to_string()),
            ..JobState::fresh()
        });
        if moved_past_limit(headers, &topology.dead_letter_queue) {
            // The broker, not snapq, parked it: say so, with the reason it was dead-lettered
            // for (the reason shown only; a replay sets its own).
            state.reason = Some(match state.reason.take() {
                Some(reason) => format!("{DEAD_LETTER_LIMIT_REASON}:{reason}"),
                None => DEAD_LETTER_LIMIT_REASON.to_string(),
            });
        }
        jobs.push(ParkedJob {
            message,
            request,
            state,
        });
    }
    Ok(jobs)
}

/// The reason `snapq jobs` shows for a job the broker moved from the dead-letter queue to the
/// parking lot because it reached the dead-letter queue's delivery limit (followed by
/// `:<x-snapq-reason>` when the job had one).
pub const DEAD_LETTER_LIMIT_REASON: &str = "dead-letter-limit";

/// Whether the broker's last dead-lettering of the message (the first `x-death` entry) was
/// out of `queue` for its delivery limit.
fn moved_past_limit(headers: Option<&FieldTable>, queue: &str) -> bool {
    let Some(AMQPValue::FieldArray(deaths)) = headers.and_then(|h| h.inner().get("x-death")) else {
        return false;
    };
    let Some(AMQPValue::FieldTable(last)) = deaths.as_slice().first() else {
        return false;
    };
    let text = |key: &str| match last.inner().get(key) {
        Some(AMQPValue::LongString(s)) => Some(s.as_bytes().to_vec()),
        Some(AMQPValue::ShortString(s)) => Some(s.as_str().as_bytes().to_vec()),
        _ => None,
    };
    text("reason").as_deref() == Some(b"delivery_limit".as_slice())
        && text("queue").as_deref() == Some(queue.as_bytes())
}

/// Returns jobs to the parking lot, each to its place (a classic queue requeues in place).
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

#[cfg(test)]
mod tests {
    use lapin::types::{FieldArray, LongString};

    use super::*;

    fn text(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
    }

    fn died(entries: &[(&str, &str)]) -> FieldTable {
        let deaths: Vec<AMQPValue> = entries
            .iter()
            .map(|(queue, reason)| {
                let mut death = FieldTable::default();
                death.insert("queue".into(), text(queue));
                death.insert("reason".into(), text(reason));
                AMQPValue::FieldTable(death)
            })
            .collect();
        let mut headers = FieldTable::default();
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(deaths)),
        );
        headers
    }

    #[test]
    fn a_job_the_broker_moved_past_the_dead_letter_limit_is_told_apart() {
        let moved = died(&[("t.dead", "delivery_limit"), ("t", "rejected")]);
        assert!(moved_past_limit(Some(&moved), "t.dead"));
        // Only the last dead-lettering counts, and only out of the dead-letter queue.
        let earlier = died(&[("t", "rejected"), ("t.dead", "delivery_limit")]);
        assert!(!moved_past_limit(Some(&earlier), "t.dead"));
        let work = died(&[("t", "delivery_limit")]);
        assert!(!moved_past_limit(Some(&work), "t.dead"));
        assert!(!moved_past_limit(Some(&FieldTable::default()), "t.dead"));
        assert!(!moved_past_limit(None, "t.dead"));
    }
}
