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
//! ```

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
