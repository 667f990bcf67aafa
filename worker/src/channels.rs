//! The channels a worker uses on one broker connection: the consuming channel, which carries
//! the deliveries and their acknowledgements, and a pool of confirmed channels for publishing
//! (checkpoints, retries, dead letters, replies). A publish that fails closes only the channel
//! it used, which leaves the pool; the consuming channel, and with it every other in-flight
//! job's acknowledgement, is not affected.

use std::sync::Mutex;

use lapin::{Channel, Connection};
use snapq_common::amqp::{self, AmqpError};

pub struct Channels {
    /// Deliveries come on it and are acknowledged on it.
    pub consume: Channel,
    connection: Connection,
    idle: Mutex<Vec<Channel>>,
}

impl Channels {
    pub fn new(connection: Connection, consume: Channel) -> Channels {
        Channels {
            consume,
            connection,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// A confirmed channel for one publish: an idle one, or a new one.
    pub async fn publisher(&self) -> Result<Channel, AmqpError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        match idle {
            Some(channel) if channel.status().connected() => Ok(channel),
            _ => amqp::open_confirmed_channel(&self.connection).await,
        }
    }

    /// Hands a channel back after a publish; a closed one is dropped.
    pub fn give_back(&self, channel: Channel) {
        if channel.status().connected() {
            self.idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(channel);
        }
    }

    pub fn connection(&self) -> &Connection {
        &self.connection
    }
}
