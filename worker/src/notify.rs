//! What snapq tells the cloud about a job, as oslo notifications: `snapq.snapshot.start` when a
//! job begins, `snapq.snapshot.end` when its image is active (by the direct path or the full
//! copy), `snapq.snapshot.error` when it ends without one (parked or refused). The bodies are
//! built here; `broker::JobMessage::notify` publishes them.

use serde_json::{json, Value};
use snapq_common::job::{JobState, Step};
use snapq_common::message::SnapshotRequest;

pub const START: &str = "snapq.snapshot.start";
pub const END: &str = "snapq.snapshot.end";
pub const ERROR: &str = "snapq.snapshot.error";

/// oslo's priorities snapq uses (routing key `<topic>.<priority>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Info,
    Error,
}

impl Priority {
    pub fn name(self) -> &'static str {
        match self {
            Priority::Info => "info",
            Priority::Error => "error",
        }
    }
}

/// One notification: its event type, priority and payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_type: &'static str,
    pub priority: Priority,
    pub payload: Value,
}

fn base(request: &SnapshotRequest, job_id: &str) -> Value {
    json!({
        "image_id": request.image_id.to_string(),
        "image_name": request.image_name,
        "disk": request.disk.to_string(),
        "job_id": job_id,
    })
}

pub fn start(request: &SnapshotRequest, job_id: &str) -> Event {
    Event {
        event_type: START,
        priority: Priority::Info,
        payload: base(request, job_id),
    }
}

/// The image is active: made by `method` (`direct` or `fallback`) in `seconds`; `bytes` of
/// data stored (the clone's allocated bytes, or what the full copy read), when known.
pub fn end(
    request: &SnapshotRequest,
    job_id: &str,
    method: &str,
    seconds: f64,
    bytes: Option<u64>,
) -> Event {
    let mut payload = base(request, job_id);
    payload["method"] = json!(method);
    payload["seconds"] = json!(seconds);
    payload["bytes"] = json!(bytes);
    Event {
        event_type: END,
        priority: Priority::Info,
        payload,
    }
}

/// The job ended without an image: why (`reason`, the dead-letter reason), at which step,
/// with the last error.
pub fn error(request: &SnapshotRequest, job_id: &str, state: &JobState) -> Event {
    let mut payload = base(request, job_id);
    payload["reason"] = json!(state.reason.as_deref().unwrap_or("dead-lettered"));
    payload["step"] = json!(failed_step(state));
    payload["message"] = json!(state.last_error.as_deref().unwrap_or(""));
    Event {
        event_type: ERROR,
        priority: Priority::Error,
        payload,
    }
}

/// The step the job failed at: the last one its history shows failing, else the one after
/// the last it completed.
fn failed_step(state: &JobState) -> String {
    if let Some(entry) = state.history.iter().rev().find(|e| e.did == "failed") {
        return entry.step.clone();
    }
    match state.step_done {
        None => Step::ALL[0].name().to_string(),
        Some(done) => done.next().map_or("full_copy", Step::name).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapq_common::message::DiskSpec;

    fn request() -> SnapshotRequest {
        SnapshotRequest::new(
            DiskSpec::new("vms", "d_disk").unwrap(),
            uuid::Uuid::nil(),
            "n".into(),
        )
    }

    #[test]
    fn events_carry_what_operators_need() {
        let end = end(&request(), "j1", "direct", 1.5, Some(64));
        assert_eq!(end.event_type, "snapq.snapshot.end");
        assert_eq!(end.payload["disk"], "vms/d_disk");
        assert_eq!(end.payload["method"], "direct");
        assert_eq!(end.payload["bytes"], 64);

        let mut state = JobState::fresh();
        state.step_done = Some(Step::CloneToImages);
        state.last_error = Some("boom".into());
        state.reason = Some("park".into());
        let error = error(&request(), "j1", &state);
        assert_eq!(error.priority, Priority::Error);
        assert_eq!(error.payload["step"], "flatten");
        assert_eq!(error.payload["reason"], "park");
        assert_eq!(error.payload["message"], "boom");
    }
}
