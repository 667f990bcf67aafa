//! Connections and channels.

use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionProperties};

use super::error::{redact_url, scrub, AmqpError};

/// Connects to the broker; `name` shows in the management UI's connection list. The error
/// shows the URL without its password (lapin's own text may quote the URL: it is scrubbed).
pub async fn connect(url: &str, name: &str) -> Result<Connection, AmqpError> {
    connect_with_ca(url, name, None).await
}

/// [`connect`], trusting the CA certificates in `ca_pem` (PEM) beside the system's for an
/// `amqps://` broker.
pub async fn connect_with_ca(
    url: &str,
    name: &str,
    ca_pem: Option<&str>,
) -> Result<Connection, AmqpError> {
    crate::tls::install_provider();
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let connect_error = |e: lapin::Error| AmqpError::Connect {
        address: redact_url(url),
        detail: scrub(&e.to_string(), url),
    };
    let runtime = lapin::runtime::default_runtime().map_err(connect_error)?;
    let tls = lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain: ca_pem.map(str::to_string),
    };
    Connection::connect_with_config(url, properties, tls, runtime)
        .await
        .map_err(connect_error)
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
