//! Every exchange and queue snapq uses, declared in one place.
//!
//! ```text
//! producer ──► exchange `openstack` (topic, oslo's control_exchange)
//!                 │ routing key `snapq` (the oslo topic)
//!                 ▼
//!              queue `snapq` (quorum, delivery limit, at-least-once dead-lettering)
//!                 │ rejected / delivery limit reached / expired
//!                 ▼
//!              exchange `snapq.dlx` (direct) ──► queue `snapq.dead` (quorum, delivery limit)
//!                                                  │ dead-letter consumer: cleanup + full copy, or park
//!                                                  │ delivery limit reached: moved by the broker
//!                                                  ▼ (at least once, via the default exchange)
//!                                                queue `snapq.parked` (durable classic)
//!
//! retry tiers: queue `snapq.retry.<n>ms` (quorum, queue-level TTL, delivery limit)
//!              ──expired or delivery limit──► `openstack`/`snapq`
//! ```
//!
//! Retries wait in one queue per delay tier: per-message TTLs would block each other at the
//! head of a single queue.
//!
//! **Delivery limits.** Every quorum queue states its `x-delivery-limit`: RabbitMQ 3.x has no
//! limit unless one is declared, RabbitMQ 4.0 made 20 the default, and past the limit the
//! broker drops a message unless the queue dead-letters it. So each quorum queue also says
//! where a message goes past its limit, and none of them drops one: the work queue and the
//! retry tiers dead-letter as they do for rejections and expiry, the dead-letter queue
//! dead-letters onward to the parking lot. All of them dead-letter at least once (which needs
//! `x-overflow=reject-publish`, or RabbitMQ silently falls back to at most once).
//!
//! **The parking lot is a classic queue.** Operators browse it (`snapq jobs`: `basic.get`,
//! then put back), and on a quorum queue every put-back counts as a delivery (up to 4.2 for
//! `basic.nack` too, for `basic.reject` in every version): under RabbitMQ 4's default limit a
//! parked job would be dropped after 20 looks. A durable classic queue counts nothing, has no
//! delivery limit, keeps a put-back message at its place, and keeps persistent messages on disk
//! across restarts. Nothing dead-letters out of it, so at-least-once dead-lettering has
//! nothing to apply to there. The price: a classic queue is not replicated, so in a cluster it
//! lives on one node (parking there fails, and the job waits in the dead-letter queue, while
//! that node is down).
//!
//! **Existing queues are not changed.** RabbitMQ refuses a redeclaration with other arguments
//! (`PRECONDITION_FAILED`) and cannot change a queue's type or arguments in place. A broker
//! where an older snapq declared these queues (the parking lot as a quorum queue, the
//! dead-letter queue and retry tiers without a delivery limit) gets
//! [`AmqpError::QueueMismatch`] naming the queue and what to do. snapq does not migrate by
//! itself: quorum queues cannot be deleted "only if empty", so deleting one while other
//! workers park jobs in it could lose them; the operator moves the messages and deletes it.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use super::error::AmqpError;

/// Deliveries of one message in the dead-letter queue before the broker moves it, as it is, to
/// the parking lot. The dead-letter consumer returns a message that is not its fault: while
/// another worker holds the job's lease (one return a second until a crashed worker's lease,
/// 30 s by default, expires), when parking fails, at a restart; RabbitMQ before 4.3 counts
/// every return. 100 leaves room for all of that, and still takes a message that crashes every
/// dead-letter worker out of their way into the parking lot instead of looping forever.
pub const DEAD_LETTER_DELIVERY_LIMIT: u32 = 100;

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
    /// Deliveries of one message in the work queue (and in each retry tier) before the broker
    /// dead-letters it.
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
    /// Jobs neither the fast path nor the fallback could finish, kept for an operator: a
    /// durable classic queue, so that browsing it counts no deliveries (see the module docs).
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
    /// cannot lose messages, to the dead-letter exchange.
    pub fn work_queue_arguments(&self) -> FieldTable {
        quorum_dead_lettering(
            &self.dead_letter_exchange,
            &self.dead_letter_routing_key,
            self.config.delivery_limit,
        )
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

    /// Every queue snapq declares with its arguments, in the order [`declare_topology`]
    /// declares them (each queue after the one it dead-letters to).
    pub fn queue_declarations(&self) -> Vec<QueueDeclaration> {
        let mut queues = vec![
            QueueDeclaration {
                name: self.parked_queue.clone(),
                role: QueueRole::Parked,
                arguments: Topology::parked_queue_arguments(),
            },
            QueueDeclaration {
                name: self.dead_letter_queue.clone(),
                role: QueueRole::DeadLetter,
                arguments: self.dead_letter_queue_arguments(),
            },
            QueueDeclaration {
                name: self.work_queue.clone(),
                role: QueueRole::Work,
                arguments: self.work_queue_arguments(),
            },
        ];
        queues.extend(self.retry_queues.iter().map(|retry| QueueDeclaration {
            name: retry.name.clone(),
            role: QueueRole::Retry,
            arguments: self.retry_queue_arguments(retry),
        }));
        queues
    }

    /// A retry tier: quorum, queue-level TTL, dead-lettered (at least once) back to the
    /// request exchange with the work queue's routing key. Nothing consumes a tier, so its
    /// delivery limit (the work queue's) only bounds an outside consumer returning messages;
    /// past it a message goes where its expiry would have sent it, back to the work queue.
    pub fn retry_queue_arguments(&self, queue: &RetryQueue) -> FieldTable {
        let mut args = quorum_dead_lettering(
            &self.request_exchange,
            &self.request_routing_key,
            self.config.delivery_limit,
        );
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(queue.delay.as_millis() as i64),
        );
        args
    }

    /// The dead-letter queue: quorum, at most [`DEAD_LETTER_DELIVERY_LIMIT`] deliveries of a
    /// message, then the broker moves it (at least once, its headers kept, `x-death` added) to
    /// the parking lot through the default exchange, so a job is never dropped there.
    pub fn dead_letter_queue_arguments(&self) -> FieldTable {
        quorum_dead_lettering("", &self.parked_queue, DEAD_LETTER_DELIVERY_LIMIT)
    }

    /// The parking lot: a durable classic queue, no delivery limit, no dead-lettering (see the
    /// module docs for why it is not a quorum queue).
    pub fn parked_queue_arguments() -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), long_string("classic"));
        args
    }
}

/// Which of snapq's queues a declaration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRole {
    Work,
    Retry,
    DeadLetter,
    Parked,
}

impl QueueRole {
    fn what(self) -> &'static str {
        match self {
            QueueRole::Work => "work queue",
            QueueRole::Retry => "retry queue",
            QueueRole::DeadLetter => "dead-letter queue",
            QueueRole::Parked => "parking-lot queue",
        }
    }

    fn declare_op(self) -> &'static str {
        match self {
            QueueRole::Work => "declare work queue",
            QueueRole::Retry => "declare retry queue",
            QueueRole::DeadLetter => "declare dead-letter queue",
            QueueRole::Parked => "declare parking-lot queue",
        }
    }

    /// What an operator does about an existing queue of this role that the broker refused to
    /// redeclare, saying `broker`.
    fn redeclare_hint(self, queue: &str, broker: &str) -> String {
        let recreate = format!(
            "move its messages to a temporary queue (e.g. with a shovel), delete it \
             (`rabbitmqctl delete_queue {queue}`), start snapq (it declares the queue anew), \
             then move the messages back"
        );
        let was_quorum = broker.contains("current is 'quorum'");
        match self {
            QueueRole::Parked if was_quorum => format!(
                "snapq keeps its parking lot in a durable classic queue, which browsing it \
                 (`snapq jobs`) does not count deliveries on; an older snapq declared this one as \
                 a quorum queue, where every look counts (RabbitMQ 4 drops or dead-letters a \
                 message after 20), and RabbitMQ cannot change a queue's type. To keep its jobs, \
                 {recreate}"
            ),
            QueueRole::Work => format!(
                "RabbitMQ cannot change a declared queue's arguments: the work queue was declared \
                 with another --delivery-limit, or by an older snapq. Use the queue's limit, or \
                 stop the producers and workers, {recreate}"
            ),
            QueueRole::Parked | QueueRole::DeadLetter | QueueRole::Retry => format!(
                "RabbitMQ cannot change a declared queue's arguments; an older snapq declared it \
                 with others. Stop the snapq workers, {recreate}"
            ),
        }
    }
}

/// One queue as snapq declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueDeclaration {
    pub name: String,
    pub role: QueueRole,
    pub arguments: FieldTable,
}

/// A quorum queue with at most `delivery_limit` deliveries of a message, dead-lettering
/// (rejected, expired, past the limit) to `exchange` with `routing_key` at least once: that
/// needs reject-publish overflow, or RabbitMQ silently falls back to at most once.
fn quorum_dead_lettering(exchange: &str, routing_key: &str, delivery_limit: u32) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long_string("quorum"));
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongInt(i32::try_from(delivery_limit).unwrap_or(i32::MAX)),
    );
    args.insert("x-dead-letter-exchange".into(), long_string(exchange));
    args.insert("x-dead-letter-routing-key".into(), long_string(routing_key));
    args.insert(
        "x-dead-letter-strategy".into(),
        long_string("at-least-once"),
    );
    args.insert("x-overflow".into(), long_string("reject-publish"));
    args
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// Whether the broker refused an operation with `PRECONDITION_FAILED` (for a declaration: the
/// entity exists with other arguments); the broker's text if so.
fn precondition_failed(error: &lapin::Error) -> Option<String> {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp)
            if matches!(
                amqp.kind(),
                AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
            ) =>
        {
            Some(amqp.get_message().as_str().to_string())
        }
        _ => None,
    }
}

/// Declares one queue; an existing queue with other arguments is
/// [`AmqpError::QueueMismatch`], with what to do about it.
async fn declare_queue(channel: &Channel, queue: &QueueDeclaration) -> Result<(), AmqpError> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    match channel
        .queue_declare(queue.name.as_str().into(), durable, queue.arguments.clone())
        .await
    {
        Ok(_) => Ok(()),
        Err(source) => Err(match precondition_failed(&source) {
            Some(broker) => AmqpError::QueueMismatch {
                what: queue.role.what(),
                queue: queue.name.clone(),
                hint: queue.role.redeclare_hint(&queue.name, &broker),
                broker,
            },
            None => AmqpError::Broker {
                op: queue.role.declare_op(),
                source,
            },
        }),
    }
}

/// Declares every exchange, queue and binding (idempotent: the broker accepts an identical
/// redeclaration). A queue that exists with other arguments fails the declaration with
/// [`AmqpError::QueueMismatch`] (the broker then closes `channel`).
pub async fn declare_topology(channel: &Channel, topology: &Topology) -> Result<(), AmqpError> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let request_exchange = ExchangeDeclareOptions {
        durable: topology.config.exchange_durable,
        ..ExchangeDeclareOptions::default()
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
    for queue in topology.queue_declarations() {
        declare_queue(channel, &queue).await?;
        let (exchange, routing_key, op) = match queue.role {
            QueueRole::DeadLetter => (
                &topology.dead_letter_exchange,
                &topology.dead_letter_routing_key,
                "bind dead-letter queue",
            ),
            QueueRole::Work => (
                &topology.request_exchange,
                &topology.request_routing_key,
                "bind work queue",
            ),
            // Reached through the default exchange, by name.
            QueueRole::Parked | QueueRole::Retry => continue,
        };
        channel
            .queue_bind(
                queue.name.as_str().into(),
                exchange.as_str().into(),
                routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(AmqpError::broker(op))?;
        if queue.role == QueueRole::Work {
            // oslo's `topic.server` target (`client.prepare(server=...)`): snapq's workers
            // are interchangeable and any job resumes on any of them, so a call aimed at one
            // server is served by whichever worker takes it from the shared work queue.
            let per_server = format!("{}.*", topology.request_routing_key);
            channel
                .queue_bind(
                    queue.name.as_str().into(),
                    exchange.as_str().into(),
                    per_server.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(AmqpError::broker("bind work queue for topic.server"))?;
        }
    }
    Ok(())
}

/// The priorities snapq notifies at.
pub const NOTIFICATION_PRIORITIES: [&str; 2] = ["info", "error"];

/// Declares oslo's notification queues `<topic>.info` and `<topic>.error` for each topic,
/// bound to the control exchange, as oslo.messaging's rabbit driver does before it publishes a
/// notification (so none is lost before a listener comes): durable as the exchange, not
/// auto-deleted, no arguments. A listener (ceilometer, an oslo notification listener) declares
/// the same queues and consumes them.
pub async fn declare_notification_queues(
    channel: &Channel,
    topology: &Topology,
    topics: &[String],
) -> Result<(), AmqpError> {
    for topic in topics {
        for priority in NOTIFICATION_PRIORITIES {
            let name = format!("{topic}.{priority}");
            channel
                .queue_declare(
                    name.as_str().into(),
                    QueueDeclareOptions {
                        durable: topology.config.exchange_durable,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(AmqpError::broker("declare a notification queue"))?;
            channel
                .queue_bind(
                    name.as_str().into(),
                    topology.request_exchange.as_str().into(),
                    name.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(AmqpError::broker("bind a notification queue"))?;
        }
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

    fn arg(args: &FieldTable, key: &str) -> Option<AMQPValue> {
        args.inner().get(key).cloned()
    }

    #[test]
    fn every_quorum_queue_states_its_delivery_limit_and_where_a_message_goes_past_it() {
        let t = Topology::new(TopologyConfig {
            delivery_limit: 7,
            ..TopologyConfig::default()
        });
        let queues = t.queue_declarations();
        let mut names: Vec<_> = queues.iter().map(|q| q.name.as_str()).collect();
        let mut all = t.all_queues();
        names.sort_unstable();
        all.sort_unstable();
        assert_eq!(names, all, "every queue is declared, once");
        for queue in &queues {
            let args = &queue.arguments;
            if arg(args, "x-queue-type") != Some(long_string("quorum")) {
                continue;
            }
            let limit = arg(args, "x-delivery-limit");
            assert!(
                matches!(limit, Some(AMQPValue::LongInt(n)) if n > 0),
                "{}: a positive x-delivery-limit, got {limit:?}",
                queue.name
            );
            assert!(
                args.inner().contains_key("x-dead-letter-exchange")
                    && args.inner().contains_key("x-dead-letter-routing-key"),
                "{}: past its limit a message is dead-lettered, not dropped",
                queue.name
            );
            assert_eq!(
                arg(args, "x-dead-letter-strategy"),
                Some(long_string("at-least-once")),
                "{}",
                queue.name
            );
            assert_eq!(
                arg(args, "x-overflow"),
                Some(long_string("reject-publish")),
                "{}: at-least-once needs reject-publish",
                queue.name
            );
        }
        let quorum = queues
            .iter()
            .filter(|q| arg(&q.arguments, "x-queue-type") == Some(long_string("quorum")))
            .count();
        assert_eq!(quorum, 2 + RETRY_TIERS.len(), "all but the parking lot");
    }

    #[test]
    fn dead_letter_queue_moves_a_message_past_its_limit_to_the_parking_lot() {
        let t = Topology::new(TopologyConfig::default());
        let args = t.dead_letter_queue_arguments();
        assert_eq!(
            arg(&args, "x-delivery-limit"),
            Some(AMQPValue::LongInt(DEAD_LETTER_DELIVERY_LIMIT as i32))
        );
        // The default exchange routes by queue name.
        assert_eq!(arg(&args, "x-dead-letter-exchange"), Some(long_string("")));
        assert_eq!(
            arg(&args, "x-dead-letter-routing-key"),
            Some(long_string("snapq.parked"))
        );
        assert_eq!(arg(&args, "x-queue-type"), Some(long_string("quorum")));
    }

    #[test]
    fn parking_lot_is_a_classic_queue_without_delivery_limit() {
        let t = Topology::new(TopologyConfig::default());
        assert_eq!(t.parked_queue, "snapq.parked");
        let args = Topology::parked_queue_arguments();
        assert_eq!(arg(&args, "x-queue-type"), Some(long_string("classic")));
        // RabbitMQ refuses x-delivery-limit on a classic queue; nothing dead-letters out of it.
        for key in [
            "x-delivery-limit",
            "x-dead-letter-exchange",
            "x-message-ttl",
            "x-max-length",
            "x-expires",
        ] {
            assert_eq!(arg(&args, key), None, "{key}");
        }
    }

    #[test]
    fn retry_tiers_state_a_delivery_limit_and_return_to_the_work_queue() {
        let t = Topology::new(TopologyConfig {
            delivery_limit: 9,
            ..TopologyConfig::default()
        });
        for retry in &t.retry_queues {
            let args = t.retry_queue_arguments(retry);
            assert_eq!(arg(&args, "x-delivery-limit"), Some(AMQPValue::LongInt(9)));
            assert_eq!(
                arg(&args, "x-dead-letter-exchange"),
                Some(long_string("openstack"))
            );
            assert_eq!(
                arg(&args, "x-message-ttl"),
                Some(AMQPValue::LongLongInt(retry.delay.as_millis() as i64))
            );
        }
    }

    #[test]
    fn queues_are_declared_after_the_queue_they_dead_letter_to() {
        let t = Topology::new(TopologyConfig::default());
        let order: Vec<_> = t.queue_declarations().into_iter().map(|q| q.role).collect();
        let at = |role| order.iter().position(|r| *r == role).expect("declared");
        assert!(at(QueueRole::Parked) < at(QueueRole::DeadLetter));
        assert!(at(QueueRole::Work) < at(QueueRole::Retry));
    }

    #[test]
    fn a_mismatched_parking_lot_says_what_to_do() {
        // RabbitMQ 3.10's words.
        let broker = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue \
                      'snapq.parked' in vhost '/': received 'classic' but current is 'quorum'";
        let hint = QueueRole::Parked.redeclare_hint("snapq.parked", broker);
        for part in [
            "classic",
            "quorum",
            "rabbitmqctl delete_queue snapq.parked",
            "move the messages back",
        ] {
            assert!(hint.contains(part), "{part}: {hint}");
        }
        let broker = "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue \
                      'snapq.dead' in vhost '/': received the value '100' of type 'signedint' \
                      but current is none";
        let hint = QueueRole::DeadLetter.redeclare_hint("snapq.dead", broker);
        assert!(
            hint.contains("rabbitmqctl delete_queue snapq.dead") && !hint.contains("quorum"),
            "{hint}"
        );
        let hint = QueueRole::Work.redeclare_hint("snapq", broker);
        assert!(hint.contains("--delivery-limit"), "{hint}");
    }
}
