//! Publishing snapshot requests, as oslo.messaging's `cast` and `call` do.

#![forbid(unsafe_code)]

pub mod bench;
pub mod bench_fallback;
pub mod bench_load;
pub mod jobs;

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use snapq_common::amqp::{self, oslo_properties, publish_confirmed, AmqpError, Topology};
use snapq_common::message::{MessageError, ReplyTo, RpcReply, SnapshotRequest};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProducerError {
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    #[error("invalid reply: {0}")]
    Reply(#[from] MessageError),
    #[error("no reply within {0:?} (the job may still finish; check the image in Glance)")]
    Timeout(Duration),
    #[error("the reply queue closed before a reply came")]
    ReplyQueueClosed,
}

/// A connection to the broker with the topology declared and confirms on.
pub struct Producer {
    connection: Connection,
    channel: Channel,
    topology: Topology,
}

impl Producer {
    pub async fn connect(url: &str, topology: Topology) -> Result<Producer, ProducerError> {
        Producer::connect_with_ca(url, topology, None).await
    }

    /// [`Producer::connect`] trusting the CA certificates in `ca_pem` for an `amqps://` broker.
    pub async fn connect_with_ca(
        url: &str,
        topology: Topology,
        ca_pem: Option<&str>,
    ) -> Result<Producer, ProducerError> {
        let connection = amqp::connect_with_ca(url, "snapq-producer", ca_pem).await?;
        let channel = amqp::open_confirmed_channel(&connection).await?;
        amqp::declare_topology(&channel, &topology).await?;
        Ok(Producer {
            connection,
            channel,
            topology,
        })
    }

    /// Publishes the request and returns once the broker has confirmed it (oslo `cast`).
    pub async fn cast(&self, request: &SnapshotRequest) -> Result<(), ProducerError> {
        publish_confirmed(
            &self.channel,
            &self.topology.request_exchange,
            &self.topology.request_routing_key,
            &request.encode(),
            oslo_properties(),
        )
        .await?;
        Ok(())
    }

    /// Publishes the request with a reply queue and waits up to `timeout` for the worker's
    /// answer (oslo `call`, without the per-message expiry: a snapshot request must not
    /// vanish from the work queue because its caller stopped waiting).
    pub async fn call(
        &self,
        request: SnapshotRequest,
        timeout: Duration,
    ) -> Result<RpcReply, ProducerError> {
        let (exchange, routing_key) = (
            self.topology.request_exchange.clone(),
            self.topology.request_routing_key.clone(),
        );
        self.call_via(
            request,
            &exchange,
            &routing_key,
            FieldTable::default(),
            timeout,
        )
        .await
    }

    /// Like [`call`](Self::call), but published to `exchange` with `headers` (tooling: a
    /// job sent straight to the dead-letter consumer's full copy).
    pub async fn call_via(
        &self,
        mut request: SnapshotRequest,
        exchange: &str,
        routing_key: &str,
        headers: FieldTable,
        timeout: Duration,
    ) -> Result<RpcReply, ProducerError> {
        let reply_queue = format!("reply_{}", uuid::Uuid::new_v4().simple());
        let msg_id = uuid::Uuid::new_v4().simple().to_string();
        self.channel
            .queue_declare(
                reply_queue.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|source| AmqpError::Broker {
                op: "declare reply queue",
                source,
            })?;
        let mut replies = self
            .channel
            .basic_consume(
                reply_queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|source| AmqpError::Broker {
                op: "consume reply queue",
                source,
            })?;
        request.reply = Some(ReplyTo {
            msg_id: msg_id.clone(),
            reply_queue,
        });
        publish_confirmed(
            &self.channel,
            exchange,
            routing_key,
            &request.encode(),
            oslo_properties().with_headers(headers),
        )
        .await?;
        let wait = async {
            while let Some(delivery) = replies.next().await {
                let delivery = delivery.map_err(|source| AmqpError::Broker {
                    op: "receive reply",
                    source,
                })?;
                let _ = delivery.ack(BasicAckOptions::default()).await;
                let reply = RpcReply::decode(&delivery.data)?;
                if reply.msg_id == msg_id {
                    return Ok(reply);
                }
            }
            Err(ProducerError::ReplyQueueClosed)
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ProducerError::Timeout(timeout))?
    }

    /// The channel (confirms on), for tooling such as `snapq jobs`.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub async fn close(self) {
        let _ = self.connection.close(200, "done".into()).await;
    }
}
