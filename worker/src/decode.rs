//! Reading a delivery: the request and the job state in its headers, or why they cannot be
//! read, with the remote error an oslo caller gets for it.

use lapin::message::Delivery;
use snapq_common::job::JobState;
use snapq_common::message::{RpcFailure, SnapshotRequest};

/// Why a delivery cannot be read: `detail` names the field or header; `failure` is what an
/// oslo caller gets back.
pub struct Undecodable {
    pub detail: String,
    pub failure: RpcFailure,
}

/// The request and its job state from a delivery, or why they cannot be read.
pub fn decode_job(delivery: &Delivery) -> Result<(SnapshotRequest, JobState), Undecodable> {
    let request = SnapshotRequest::decode(&delivery.data).map_err(|e| Undecodable {
        detail: e.to_string(),
        failure: e.rpc_failure(),
    })?;
    let state = JobState::from_headers(delivery.properties.headers().as_ref()).map_err(|e| {
        let detail = e.to_string();
        Undecodable {
            failure: RpcFailure::new("InvalidRequest", "snapq.exceptions", detail.clone()),
            detail,
        }
    })?;
    Ok((request, state))
}
