//! The one error type of the message layer.

/// Why a message body was rejected.
///
/// Every variant is permanent: the same body fails the same way on every delivery, so a consumer
/// should park (dead-letter) the message instead of retrying it. Variants that concern a single
/// field name it, in the dotted form used on the wire (`args.disk`, `_reply_q`, `oslo.version`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The body is over [`MAX_MESSAGE_BYTES`](super::MAX_MESSAGE_BYTES); it was not parsed.
    #[error("message body is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },

    /// The body, or the JSON string inside `oslo.message`, is not valid JSON.
    #[error("message is not valid JSON: {detail}")]
    NotJson { detail: String },

    /// The body is JSON but not oslo.messaging's v2.0 envelope.
    #[error("malformed oslo.messaging envelope: {detail}")]
    Envelope { detail: String },

    /// `oslo.version` is not the only version oslo.messaging has ever used, "2.0".
    #[error("unsupported oslo.version {version:?}, expected \"2.0\"")]
    UnsupportedVersion { version: String },

    /// `method` is not [`METHOD_SNAPSHOT_INSTANCE`](super::METHOD_SNAPSHOT_INSTANCE).
    #[error("unknown method {method:?}, expected \"snapshot_instance\"")]
    UnknownMethod { method: String },

    /// `version` asks for an RPC API version this endpoint does not implement.
    #[error("invalid version: requested RPC API version {requested} is not compatible with {implemented}")]
    IncompatibleVersion {
        requested: String,
        implemented: &'static str,
    },

    /// A required field is absent.
    #[error("missing field {field}")]
    MissingField { field: &'static str },

    /// A field is present but its value is not acceptable.
    #[error("invalid {field}: {reason}")]
    InvalidField { field: String, reason: String },
}

impl MessageError {
    /// The wire name of the field the error is about, if it is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            MessageError::MissingField { field } => Some(field),
            MessageError::InvalidField { field, .. } => Some(field),
            MessageError::UnsupportedVersion { .. } => Some("oslo.version"),
            MessageError::UnknownMethod { .. } => Some("method"),
            MessageError::IncompatibleVersion { .. } => Some("version"),
            MessageError::TooLarge { .. }
            | MessageError::NotJson { .. }
            | MessageError::Envelope { .. } => None,
        }
    }

    /// The remote error an oslo caller gets for a request refused with this error, as oslo's
    /// own dispatcher reports the same faults: `NoSuchMethod` and `UnsupportedVersion` from
    /// `oslo_messaging.rpc.dispatcher`, and snapq's `InvalidRequest` for everything else.
    pub fn rpc_failure(&self) -> super::RpcFailure {
        const DISPATCHER: &str = "oslo_messaging.rpc.dispatcher";
        match self {
            MessageError::UnknownMethod { method } => super::RpcFailure::new(
                "NoSuchMethod",
                DISPATCHER,
                format!("Endpoint does not support RPC method {method}"),
            ),
            MessageError::IncompatibleVersion { requested, .. } => super::RpcFailure::new(
                "UnsupportedVersion",
                DISPATCHER,
                format!(
                    "Endpoint does not support RPC version {requested}. Attempted method: {}",
                    super::METHOD_SNAPSHOT_INSTANCE
                ),
            ),
            other => {
                super::RpcFailure::new("InvalidRequest", "snapq.exceptions", other.to_string())
            }
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> MessageError {
        MessageError::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_field_display_names_the_field() {
        let err = MessageError::invalid("args.disk", "expected pool/image");
        assert_eq!(err.to_string(), "invalid args.disk: expected pool/image");
        assert_eq!(err.field(), Some("args.disk"));
    }

    #[test]
    fn too_large_display_gives_both_sizes() {
        let err = MessageError::TooLarge {
            size: 70000,
            limit: 65536,
        };
        assert_eq!(
            err.to_string(),
            "message body is 70000 bytes, over the limit of 65536"
        );
        assert_eq!(err.field(), None);
    }
}
