//! Connections and channels.

use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionProperties};

use super::error::{redact_url, scrub, AmqpError};

/// Connects to the broker; `name` shows in the management UI's connection list. The error
/// shows the URL without its password (lapin's own text may quote the URL: it is scrubbed).
pub async fn connect(url: &str, name: &str) -> Result<Connection, AmqpError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(url, properties)
        .await
        .map_err(|e| AmqpError::Connect {
            address: redact_url(url),
            detail: scrub(&e.to_string(), url),
        })
}

/// A channel with publisher confirms on: every publish through it is confirmed.
pub async fn open_confirmed_channel(connection: &Connection) -> Result<Channel, AmqpError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(AmqpError::broker("open channel"))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(AmqpError::broker("enable publisher confirms"))?;
    Ok(channel)
}
