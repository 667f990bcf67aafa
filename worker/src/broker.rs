//! The broker side of one job message: everything a role handler may do with the delivery it
//! holds. Each action that moves the job elsewhere publishes first (confirmed by the broker)
//! and acknowledges only then, so a crash in between leaves a duplicate, never a loss; the
//! job's steps are idempotent, and duplicates are expected.
//!
//! Every copy published carries the body without the caller's secrets (see
//! `snapq_common::message::without_secrets`).

use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use snapq_common::amqp::{oslo_properties, publish_confirmed, AmqpError};
use snapq_common::job::{DeadLetterReason, JobState};
use snapq_common::message::{
    encode_notification, reply_to_of, without_secrets, ReplyTo, RpcFailure, RpcReply,
    SnapshotRequest,
};
use tracing::warn;

use crate::channels::Channels;
use crate::notify::{self, Event};
use crate::settings::WorkerSettings;

/// A delivery this worker holds, with the worker's channels.
pub struct JobMessage<'a> {
    settings: &'a WorkerSettings,
    channels: &'a Channels,
    delivery: &'a Delivery,
    /// The body as snapq republishes it: without secrets.
    body: Vec<u8>,
}

impl<'a> JobMessage<'a> {
    pub fn new(
        settings: &'a WorkerSettings,
        channels: &'a Channels,
        delivery: &'a Delivery,
    ) -> JobMessage<'a> {
        JobMessage {
            settings,
            channels,
            delivery,
            body: without_secrets(&delivery.data),
        }
    }

    pub fn delivery(&self) -> &Delivery {
        self.delivery
    }

    /// Publishes the job to the work queue with `state` (its next step), confirmed. The
    /// delivery stays held: the caller acknowledges it.
    pub async fn publish_checkpoint(&self, state: &JobState) -> Result<(), AmqpError> {
        let topology = &self.settings.topology;
        self.publish(
            &topology.request_exchange,
            &topology.request_routing_key,
            state,
        )
        .await
    }

    /// Sends the job, with `state`, to the retry tier that waits at least `delay`. If that
    /// fails the delivery goes straight back to its queue.
    pub async fn retry_after(&self, state: &JobState, delay: Duration) {
        let tier = self.settings.topology.retry_queue_for(delay);
        if let Err(e) = self.hand_over("", &tier.name, state).await {
            warn!(error = %e, "could not publish to the retry queue; requeueing directly");
            self.nack(true).await;
        }
    }

    /// Sends the job to the dead-letter exchange with its reason. If that fails, rejecting it
    /// lets the broker route it to the same exchange.
    pub async fn dead_letter(&self, mut state: JobState, reason: DeadLetterReason) {
        state.set_reason(reason);
        let topology = &self.settings.topology;
        let handed_over = self
            .hand_over(
                &topology.dead_letter_exchange,
                &topology.dead_letter_routing_key,
                &state,
            )
            .await;
        if let Err(e) = handed_over {
            warn!(error = %e, "could not publish to the dead-letter exchange; rejecting instead");
            self.nack(false).await;
        }
    }

    /// Publishes `event` for the job of `request` as an oslo notification, to each configured
    /// topic, with the request's context (never its secrets). A notification that cannot be
    /// published is logged; it never fails the job.
    pub async fn notify(&self, request: &SnapshotRequest, event: Event) {
        let notifications = &self.settings.notifications;
        if !notifications.enabled {
            return;
        }
        let body = encode_notification(
            &notifications.publisher_id,
            event.event_type,
            event.priority.name(),
            event.payload,
            &request.context,
        );
        for topic in &notifications.topics {
            let routing_key = format!("{topic}.{}", event.priority.name());
            if let Err(e) = self
                .publish_body(
                    &self.settings.topology.request_exchange,
                    &routing_key,
                    &body,
                    oslo_properties(),
                )
                .await
            {
                warn!(%routing_key, event = event.event_type, error = %e, "could not publish a notification");
            }
        }
    }

    /// Moves the job to the parking lot, where it ends without an image: with a request, the
    /// `snapq.snapshot.error` notification says so. If parking fails the job stays where it
    /// is, for later (and no notification goes out yet).
    pub async fn park_request(&self, request: &SnapshotRequest, state: &JobState) {
        if self.park_or_keep(state).await {
            let job_id = state.job_id.as_deref().unwrap_or(&request.unique_id);
            self.notify(request, notify::error(request, job_id, state))
                .await;
        }
    }

    /// Moves the job to the parking lot. If that fails it stays where it is, for later.
    pub async fn park(&self, state: &JobState) {
        self.park_or_keep(state).await;
    }

    /// Parks the job; true if it was parked.
    async fn park_or_keep(&self, state: &JobState) -> bool {
        let parked = self
            .hand_over("", &self.settings.topology.parked_queue, state)
            .await;
        if let Err(e) = parked {
            warn!(error = %e, "could not park the job; leaving it in its queue");
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.nack(true).await;
            return false;
        }
        true
    }

    /// Answers the caller, if the request was a `call`. A caller that went away is not the
    /// job's failure: the reply is logged and dropped.
    pub async fn reply(
        &self,
        request: &SnapshotRequest,
        result: Option<serde_json::Value>,
        failure: Option<RpcFailure>,
    ) {
        if let Some(reply_to) = &request.reply {
            self.reply_to(reply_to, result, failure).await;
        }
    }

    /// Answers the caller of a message that could not be decoded, if its body names an
    /// oslo-shaped reply queue.
    pub async fn reply_undecodable(&self, failure: RpcFailure) {
        if let Some(reply_to) = reply_to_of(&self.delivery.data) {
            self.reply_to(&reply_to, None, Some(failure)).await;
        }
    }

    async fn reply_to(
        &self,
        reply_to: &ReplyTo,
        result: Option<serde_json::Value>,
        failure: Option<RpcFailure>,
    ) {
        let reply = RpcReply {
            msg_id: reply_to.msg_id.clone(),
            result,
            failure,
        };
        if let Err(e) = self
            .publish_body(
                "",
                &reply_to.reply_queue,
                &reply.encode(),
                oslo_properties(),
            )
            .await
        {
            warn!(reply_queue = %reply_to.reply_queue, error = %e, "could not deliver the reply");
        }
    }

    pub async fn ack(&self) {
        if let Err(e) = self.delivery.ack(BasicAckOptions::default()).await {
            // The broker will redeliver; the job's steps are idempotent.
            warn!(error = %e, "ack failed; the job will be redelivered");
        }
    }

    pub async fn nack(&self, requeue: bool) {
        let options = BasicNackOptions {
            requeue,
            multiple: false,
        };
        if let Err(e) = self.delivery.nack(options).await {
            warn!(error = %e, requeue, "nack failed; the broker will redeliver the job");
        }
    }

    /// Publishes the job with `state` to `exchange`/`routing_key` (confirmed), then
    /// acknowledges the delivery. On a publish error the delivery stays held for the caller
    /// to decide where the job goes instead.
    async fn hand_over(
        &self,
        exchange: &str,
        routing_key: &str,
        state: &JobState,
    ) -> Result<(), AmqpError> {
        self.publish(exchange, routing_key, state).await?;
        self.ack().await;
        Ok(())
    }

    async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        state: &JobState,
    ) -> Result<(), AmqpError> {
        self.publish_body(
            exchange,
            routing_key,
            &self.body,
            oslo_properties().with_headers(state.to_headers()),
        )
        .await
    }

    /// One confirmed publish on a channel of the publishing pool.
    async fn publish_body(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: lapin::BasicProperties,
    ) -> Result<(), AmqpError> {
        let channel = self.channels.publisher().await?;
        let published = publish_confirmed(&channel, exchange, routing_key, body, properties).await;
        self.channels.give_back(channel);
        published
    }
}
