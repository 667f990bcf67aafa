//! The snapshot request on the wire, in oslo.messaging's RabbitMQ format, so that any oslo
//! `RPCClient` can `cast` or `call` `snapshot_instance` to snapq:
//!
//! - [`SnapshotRequest`]: the RPC inside the v2.0 envelope, strictly validated on decode;
//! - [`RpcReply`]: what a `call` gets back on its reply queue;
//! - [`encode_notification`]: the `messagingv2` notification body.
//!
//! Every decode error names the offending field; all of them are permanent (park the message).

mod context;
mod envelope;
mod error;
mod json;
mod names;
mod notification;
mod redact;
mod reply;
mod request;

pub use context::{RequestContext, CONTEXT_KEY_PREFIX};
pub use envelope::OSLO_ENVELOPE_VERSION;
pub use error::MessageError;
pub use names::{
    validate_glance_image_name, validate_image_name, validate_pool_name, DiskSpec,
    MAX_GLANCE_IMAGE_NAME_CHARS, MAX_IMAGE_NAME_BYTES, MAX_POOL_NAME_BYTES,
};
pub use notification::encode_notification;
pub use redact::{reply_to_of, without_secrets, REDACTED};
pub use reply::{RpcFailure, RpcReply};
pub use request::{ReplyTo, SnapshotMode, SnapshotRequest};

/// The RPC method snapq serves.
pub const METHOD_SNAPSHOT_INSTANCE: &str = "snapshot_instance";

/// The RPC API version snapq implements (oslo's `Target(version=...)`).
pub const RPC_API_VERSION: &str = "1.0";

/// Largest message body accepted; larger bodies are rejected before parsing.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
