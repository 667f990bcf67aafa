//! RabbitMQ: the topology snapq declares (in one place), connections, and confirmed publishing.

mod connection;
mod error;
mod publish;
mod topology;

pub use connection::{connect, connect_with_ca, open_confirmed_channel};
pub use error::{redact_url, AmqpError};
pub use publish::{oslo_properties, publish_confirmed};
pub use topology::{
    declare_notification_queues, declare_topology, QueueDeclaration, QueueRole, Topology,
    TopologyConfig, DEAD_LETTER_DELIVERY_LIMIT, NOTIFICATION_PRIORITIES,
};
