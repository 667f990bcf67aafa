//! What an oslo `call` gets back: the result of a finished job, or the remote error of a failed
//! one (`broker::JobMessage::reply` sends them).

use snapq_common::job::JobState;
use snapq_common::message::{RpcFailure, SnapshotRequest};

use crate::error::JobError;

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
    let class = if error.is_refusal() {
        "SnapshotRefused"
    } else {
        "SnapshotFailed"
    };
    RpcFailure::new(class, "snapq.exceptions", error.to_string())
}
