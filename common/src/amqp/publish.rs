//! Publishing with a broker confirm.

use lapin::options::BasicPublishOptions;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation};

use super::error::AmqpError;

/// The properties oslo.messaging's rabbit driver sets on every message (persistent JSON).
pub fn oslo_properties() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_priority(0)
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_headers(FieldTable::default())
}

/// Publishes `body` as mandatory and waits for the broker's confirm (the channel must be in
/// confirm mode). Returns only once the broker has taken responsibility for the message.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), AmqpError> {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            properties,
        )
        .await
        .map_err(AmqpError::broker("publish"))?
        .await
        .map_err(AmqpError::broker("await publish confirm"))?;
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_returned)) => Err(AmqpError::Unroutable {
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
        }),
        Confirmation::Nack(_) | Confirmation::NotRequested => Err(AmqpError::Nacked {
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
        }),
    }
}
