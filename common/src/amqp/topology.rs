//! Every exchange and queue snapq uses, declared in one place.
//!
//! ```text
//! producer ──► exchange `openstack` (topic, oslo's control_exchange)
//!                 │ routing key `snapq` (the oslo topic)
//!                 ▼
//!              queue `snapq` (quorum, delivery limit, at-least-once dead-lettering)
//!                 │ rejected / delivery limit reached / expired
//!                 ▼
//!              exchange `snapq.dlx` (direct) ──► queue `snapq.dead` (quorum)
//!                                    dead-letter consumer: cleanup + full copy, or ──► queue `snapq.parked`
//!
//! retry tiers: queue `snapq.retry.<n>s` (quorum, queue-level TTL) ──expired──► `openstack`/`snapq`
//! ```
//!
//! Retries wait in one queue per delay tier: per-message TTLs would block each other at the
//! head of a single queue.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use super::error::AmqpError;

/// The names and limits an operator may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyConfig {
    /// oslo.messaging's `control_exchange` (topic exchange), default `openstack`.
    pub exchange: String,
    /// Declare the request exchange durable. oslo.messaging declares it with
    /// `amqp_durable_queues` (default false); both sides must agree or the broker refuses the
    /// second declaration.
    pub exchange_durable: bool,
    /// The oslo topic snapq serves: the routing key and the work queue's name.
    pub topic: String,
    /// Deliveries of one message before the broker dead-letters it.
    pub delivery_limit: u32,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        TopologyConfig {
            exchange: "openstack".into(),
            exchange_durable: false,
            topic: "snapq".into(),
            delivery_limit: 5,
        }
    }
}

/// Delays of the retry tiers.
pub const RETRY_TIERS: [Duration; 5] = [
    Duration::from_millis(500),
    Duration::from_secs(2),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(120),
];

/// A delay queue: messages wait `delay`, then return to the work queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryQueue {
    pub delay: Duration,
    pub name: String,
}

/// The declared names, derived from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub config: TopologyConfig,
    pub request_exchange: String,
    pub request_routing_key: String,
    pub work_queue: String,
    pub dead_letter_exchange: String,
    pub dead_letter_routing_key: String,
    pub dead_letter_queue: String,
    /// Jobs neither the fast path nor the fallback could finish, kept for an operator.
    pub parked_queue: String,
    pub retry_queues: Vec<RetryQueue>,
}

impl Topology {
    pub fn new(config: TopologyConfig) -> Topology {
        let topic = config.topic.clone();
        Topology {
            request_exchange: config.exchange.clone(),
            request_routing_key: topic.clone(),
            work_queue: topic.clone(),
            dead_letter_exchange: format!("{topic}.dlx"),
            dead_letter_routing_key: format!("{topic}.dead"),
            dead_letter_queue: format!("{topic}.dead"),
            parked_queue: format!("{topic}.parked"),
            retry_queues: RETRY_TIERS
                .iter()
                .map(|delay| RetryQueue {
                    delay: *delay,
                    name: format!("{topic}.retry.{}ms", delay.as_millis()),
                })
                .collect(),
            config,
        }
    }

    /// Arguments of the work queue: quorum, bounded redelivery, and dead-lettering that
    /// cannot lose messages (at-least-once needs reject-publish overflow, or RabbitMQ
    /// silently falls back to at-most-once).
    pub fn work_queue_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), long_string("quorum"));
        args.insert(
            "x-dead-letter-exchange".into(),
            long_string(&self.dead_letter_exchange),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            long_string(&self.dead_letter_routing_key),
        );
        args.insert(
            "x-dead-letter-strategy".into(),
            long_string("at-least-once"),
        );
        args.insert("x-overflow".into(), long_string("reject-publish"));
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(self.config.delivery_limit as i32),
        );
        args
    }

    /// The shortest tier that waits at least `delay` (the longest if none does).
    pub fn retry_queue_for(&self, delay: Duration) -> &RetryQueue {
        self.retry_queues
            .iter()
            .find(|q| q.delay >= delay)
            .or(self.retry_queues.last())
            .expect("there is at least one retry tier")
    }

    /// Every queue snapq declares (for tests and tooling).
    pub fn all_queues(&self) -> Vec<&str> {
        let mut queues = vec![
            self.work_queue.as_str(),
            self.dead_letter_queue.as_str(),
            self.parked_queue.as_str(),
        ];
        queues.extend(self.retry_queues.iter().map(|q| q.name.as_str()));
        queues
    }

    /// A retry tier: quorum, queue-level TTL, dead-lettered (at least once) back to the
    /// request exchange with the work queue's routing key.
    pub fn retry_queue_arguments(&self, queue: &RetryQueue) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), long_string("quorum"));
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(queue.delay.as_millis() as i64),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            long_string(&self.request_exchange),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            long_string(&self.request_routing_key),
        );
        args.insert(
            "x-dead-letter-strategy".into(),
            long_string("at-least-once"),
        );
        args.insert("x-overflow".into(), long_string("reject-publish"));
        args
    }

    fn quorum_arguments() -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), long_string("quorum"));
        args
    }
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// Declares every exchange, queue and binding (idempotent: the broker accepts an identical
/// redeclaration).
pub async fn declare_topology(channel: &Channel, topology: &Topology) -> Result<(), AmqpError> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let request_exchange = ExchangeDeclareOptions {
        durable: topology.config.exchange_durable,
        ..ExchangeDeclareOptions::default()
    };
    let durable_queue = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };

    channel
        .exchange_declare(
            topology.request_exchange.as_str().into(),
            ExchangeKind::Topic,
            request_exchange,
            FieldTable::default(),
        )
        .await
        .map_err(AmqpError::broker("declare request exchange"))?;
    channel
        .exchange_declare(
            topology.dead_letter_exchange.as_str().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await
        .map_err(AmqpError::broker("declare dead-letter exchange"))?;
    channel
        .queue_declare(
            topology.dead_letter_queue.as_str().into(),
            durable_queue,
            Topology::quorum_arguments(),
        )
        .await
        .map_err(AmqpError::broker("declare dead-letter queue"))?;
    channel
        .queue_bind(
            topology.dead_letter_queue.as_str().into(),
            topology.dead_letter_exchange.as_str().into(),
            topology.dead_letter_routing_key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(AmqpError::broker("bind dead-letter queue"))?;
    channel
        .queue_declare(
            topology.parked_queue.as_str().into(),
            durable_queue,
            Topology::quorum_arguments(),
        )
        .await
        .map_err(AmqpError::broker("declare parking-lot queue"))?;
    channel
        .queue_declare(
            topology.work_queue.as_str().into(),
            durable_queue,
            topology.work_queue_arguments(),
        )
        .await
        .map_err(AmqpError::broker("declare work queue"))?;
    channel
        .queue_bind(
            topology.work_queue.as_str().into(),
            topology.request_exchange.as_str().into(),
            topology.request_routing_key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(AmqpError::broker("bind work queue"))?;
    for retry in &topology.retry_queues {
        channel
            .queue_declare(
                retry.name.as_str().into(),
                durable_queue,
                topology.retry_queue_arguments(retry),
            )
            .await
            .map_err(AmqpError::broker("declare retry queue"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_the_topic() {
        let t = Topology::new(TopologyConfig::default());
        assert_eq!(t.request_exchange, "openstack");
        assert_eq!(t.work_queue, "snapq");
        assert_eq!(t.dead_letter_exchange, "snapq.dlx");
        assert_eq!(t.dead_letter_queue, "snapq.dead");
    }

    #[test]
    fn retry_tiers_pick_the_shortest_sufficient_delay() {
        let t = Topology::new(TopologyConfig::default());
        assert_eq!(
            t.retry_queue_for(Duration::from_millis(1)).delay,
            RETRY_TIERS[0]
        );
        assert_eq!(
            t.retry_queue_for(Duration::from_secs(3)).delay,
            Duration::from_secs(10)
        );
        assert_eq!(
            t.retry_queue_for(Duration::from_secs(9999)).delay,
            Duration::from_secs(120)
        );
        let args = t.retry_queue_arguments(&t.retry_queues[1]);
        assert_eq!(
            args.inner().get("x-message-ttl"),
            Some(&AMQPValue::LongLongInt(2000))
        );
        assert_eq!(
            args.inner().get("x-dead-letter-routing-key"),
            Some(&long_string("snapq"))
        );
        assert_eq!(t.all_queues().len(), 3 + RETRY_TIERS.len());
    }

    #[test]
    fn work_queue_dead_letters_at_least_once() {
        let t = Topology::new(TopologyConfig {
            delivery_limit: 7,
            ..TopologyConfig::default()
        });
        let args = t.work_queue_arguments();
        let get = |k: &str| args.inner().get(k).cloned();
        assert_eq!(
            get("x-dead-letter-strategy"),
            Some(long_string("at-least-once"))
        );
        assert_eq!(
            get("x-overflow"),
            Some(long_string("reject-publish")),
            "at-least-once needs reject-publish"
        );
        assert_eq!(get("x-queue-type"), Some(long_string("quorum")));
        assert_eq!(get("x-delivery-limit"), Some(AMQPValue::LongInt(7)));
        assert_eq!(
            get("x-dead-letter-exchange"),
            Some(long_string("snapq.dlx"))
        );
    }
}
