//! Broker failures.

/// A failed broker operation; every variant is worth retrying after a reconnect except
/// `Nacked`, which means the broker refused to store the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AmqpError {
    #[error("cannot connect to RabbitMQ at {address}: {detail}")]
    Connect { address: String, detail: String },
    #[error("RabbitMQ {op} failed: {source}")]
    Broker {
        op: &'static str,
        #[source]
        source: lapin::Error,
    },
    #[error("RabbitMQ refused to store a message published to exchange '{exchange}' with routing key '{routing_key}'")]
    Nacked {
        exchange: String,
        routing_key: String,
    },
    #[error("RabbitMQ could not route a message published to exchange '{exchange}' with routing key '{routing_key}' to any queue")]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
}

impl AmqpError {
    pub(crate) fn broker(op: &'static str) -> impl FnOnce(lapin::Error) -> AmqpError {
        move |source| AmqpError::Broker { op, source }
    }
}

/// The broker URL without its password, fit for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_the_password_of_a_broker_url() {
        assert_eq!(
            redact_url("amqp://snapq:s3cret@127.0.0.1:5672/%2f"),
            "amqp://snapq:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact_url("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
    }
}
