//! Broker failures.

/// A failed broker operation; every variant is worth retrying after a reconnect except
/// `Nacked`, which means the broker refused to store the message, and `QueueMismatch`, which
/// lasts until an operator deletes the queue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AmqpError {
    /// A queue exists with other arguments than snapq declares (RabbitMQ's
    /// `PRECONDITION_FAILED`); `hint` says what to do.
    #[error("RabbitMQ already has the {what} '{queue}' with other arguments than this snapq declares ({broker}): {hint}")]
    QueueMismatch {
        what: &'static str,
        queue: String,
        broker: String,
        hint: String,
    },
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

/// The user info of a URL, `user:password` in `scheme://user:password@host`, and where it
/// starts; `None` without an `@`. The last `@` ends it (a password may hold an unescaped `@`).
/// Without `://` it starts after the first `:` (as in `amqp:user:password@host`).
fn userinfo(url: &str) -> Option<(usize, &str)> {
    let start = match url.find("://") {
        Some(i) => i + 3,
        None => url.find(':').map_or(0, |i| i + 1),
    };
    let at = url[start..].rfind('@')?;
    Some((start, &url[start..start + at]))
}

/// The broker URL without its password, fit for logs and errors. Errs on the safe side: in a
/// URL without `://` all of the user info goes.
pub fn redact_url(url: &str) -> String {
    match userinfo(url) {
        Some((start, info)) => {
            let rest = &url[start + info.len()..];
            if url.contains("://") {
                let user = info.split(':').next().unwrap_or("");
                format!("{}{user}:***{rest}", &url[..start])
            } else {
                format!("***{rest}")
            }
        }
        None => url.to_string(),
    }
}

/// The password in a broker URL, as written and percent-decoded (none when it has none).
fn passwords_of(url: &str) -> Vec<String> {
    let Some((_, info)) = userinfo(url) else {
        return Vec::new();
    };
    let password = info.split_once(':').map_or(info, |(_, password)| password);
    if password.is_empty() {
        return Vec::new();
    }
    let decoded = percent_decode(password);
    let mut all = vec![password.to_string()];
    if decoded != password && !decoded.is_empty() {
        all.push(decoded);
    }
    all
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `detail` (text from lapin about connecting to `url`) with the URL redacted and every
/// occurrence of its password masked.
pub(crate) fn scrub(detail: &str, url: &str) -> String {
    let mut text = if url.is_empty() {
        detail.to_string()
    } else {
        detail.replace(url, &redact_url(url))
    };
    for password in passwords_of(url) {
        text = text.replace(&password, "***");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{redact_url, scrub, AmqpError};

    #[test]
    fn redacts_the_password_of_a_broker_url() {
        assert_eq!(
            redact_url("amqp://snapq:s3cret@127.0.0.1:5672/%2f"),
            "amqp://snapq:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact_url("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
        assert_eq!(redact_url("amqp://u:p@ss:w@h/%2f"), "amqp://u:***@h/%2f");
        assert_eq!(redact_url("amqp:u:s3cret@h"), "***@h");
    }

    #[test]
    fn scrub_masks_the_url_and_its_password_raw_and_decoded() {
        let url = "amqp:u:s3cr%40t@h";
        let detail = format!("Invalid URL: '{url}', password s3cr@t, again s3cr%40t");
        let shown = scrub(&detail, url);
        assert!(!shown.contains("s3cr"), "{shown}");
        assert!(shown.contains("Invalid URL"), "{shown}");
    }

    /// lapin's own error for a URL it cannot parse quotes the whole URL; the AmqpError built
    /// from it must not.
    #[tokio::test]
    async fn connect_error_never_shows_the_password() {
        for url in [
            "amqp:u:S3CRET-pw@127.0.0.1:1/%2f",
            "amqp://u:S3CRET-pw@127.0.0.1:1/%2f",
            "http://u:S3CRET-pw@127.0.0.1:1/",
            "amqp://u:S3CRET-pw@127.0.0.1:notaport/%2f",
        ] {
            let Err(err) = super::super::connect(url, "snapq-test").await else {
                panic!("{url}: no broker listens on port 1, yet it connected");
            };
            assert!(matches!(err, AmqpError::Connect { .. }), "{err:?}");
            let shown = format!("{err} / {err:?}");
            assert!(!shown.contains("S3CRET"), "{url}: {shown}");
        }
    }
}
