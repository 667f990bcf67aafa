//! Answers to oslo `call`s: the result or the failure, sent to the caller's reply queue.

use lapin::Channel;
use snapq_common::amqp::{oslo_properties, publish_confirmed};
use snapq_common::job::JobState;
use snapq_common::message::{ReplyTo, RpcFailure, RpcReply, SnapshotRequest};
use tracing::warn;

use crate::error::{Disposition, JobError};

/// How the image was made: inside Ceph.
pub const METHOD_DIRECT: &str = "direct";
/// How the image was made: a full copy through Glance.
pub const METHOD_FALLBACK: &str = "fallback";

/// The result a successful job returns to its caller.
pub fn success_result(
    request: &SnapshotRequest,
    seconds: f64,
    state: &JobState,
) -> serde_json::Value {
    serde_json::json!({
        "image_id": request.image_id.to_string(),
        "status": "active",
        "method": METHOD_DIRECT,
        "seconds": seconds,
        "history": state.history,
    })
}

/// The remote error a failed job's caller gets: `snapq.exceptions.SnapshotRefused` when snapq
/// would not touch what the request names, `SnapshotFailed` otherwise.
pub fn failure(error: &JobError) -> RpcFailure {
    let class = match error.disposition() {
        Disposition::Refuse => "SnapshotRefused",
        _ => "SnapshotFailed",
    };
    RpcFailure::new(class, "snapq.exceptions", error.to_string())
}

/// Sends the reply if the request was a `call`. A caller that went away is not an error of
/// the job: the reply is logged and dropped.
pub async fn send(
    channel: &Channel,
    request: &SnapshotRequest,
    result: Option<serde_json::Value>,
    failure: Option<RpcFailure>,
) {
    if let Some(reply_to) = &request.reply {
        send_to(channel, reply_to, result, failure).await;
    }
}

/// Sends a reply to `reply_to` (for a request that could not even be decoded, the address
/// salvaged from its body).
pub async fn send_to(
    channel: &Channel,
    reply_to: &ReplyTo,
    result: Option<serde_json::Value>,
    failure: Option<RpcFailure>,
) {
    let reply = RpcReply {
        msg_id: reply_to.msg_id.clone(),
        result,
        failure,
    };
    if let Err(e) = publish_confirmed(
        channel,
        "",
        &reply_to.reply_queue,
        &reply.encode(),
        oslo_properties(),
    )
    .await
    {
        warn!(reply_queue = %reply_to.reply_queue, error = %e, "could not deliver the reply");
    }
}
