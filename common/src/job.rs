//! A job's state as it travels with its message: which steps are done, what they produced,
//! and its history. snapq checkpoints by re-publishing the request with updated headers, so
//! any worker can resume any job. Header names and the state machine live here and only here.
//!
//! | header | meaning |
//! |--------|---------|
//! | `x-snapq-job-id` | the job id (the first request's `_unique_id`) |
//! | `x-snapq-step-done` | last completed step; absent before the first |
//! | `x-snapq-attempt` | attempt at the next step (1 = first try) |
//! | `x-snapq-started-ms` | when the job was first taken (Unix ms) |
//! | `x-snapq-fsid` | cluster fsid, once known |
//! | `x-snapq-source-snapshot` | `pool/disk@snap` made by `snapshot_source` |
//! | `x-snapq-image` | `pool/image` made by `clone_to_images` |
//! | `x-snapq-flatten-progress` | percent of the flatten done, while it runs |
//! | `x-snapq-history` | JSON list of `{step, worker, at_ms, seconds, did}` (last 32) |
//! | `x-snapq-last-error` | the last failure, one line |
//! | `x-snapq-reason` | why the job was dead-lettered ([`DeadLetterReason`]: `fallback`, `park`, `refused`, `retries-exhausted`, `malformed`, `fallback-failed`) |
//! | `x-snapq-replays` | times an operator replayed the job from the parking lot |
//! | `x-snapq-leftovers` | JSON list of the job's own RBD artefacts cleanup could not remove (`snapq jobs purge` removes them) |
//! | `x-snapq-fallback-attempt` | attempts the dead-letter consumer made at the job (transient failures of the full copy, or an outage it waited out) |

use lapin::types::{AMQPValue, FieldTable, LongString};
use serde::{Deserialize, Serialize};

pub const HEADER_JOB_ID: &str = "x-snapq-job-id";
pub const HEADER_STEP_DONE: &str = "x-snapq-step-done";
pub const HEADER_ATTEMPT: &str = "x-snapq-attempt";
pub const HEADER_STARTED_MS: &str = "x-snapq-started-ms";
pub const HEADER_FSID: &str = "x-snapq-fsid";
pub const HEADER_SOURCE_SNAPSHOT: &str = "x-snapq-source-snapshot";
pub const HEADER_IMAGE: &str = "x-snapq-image";
pub const HEADER_FLATTEN_PROGRESS: &str = "x-snapq-flatten-progress";
pub const HEADER_HISTORY: &str = "x-snapq-history";
pub const HEADER_LAST_ERROR: &str = "x-snapq-last-error";
pub const HEADER_REASON: &str = "x-snapq-reason";
pub const HEADER_REPLAYS: &str = "x-snapq-replays";
pub const HEADER_FALLBACK_ATTEMPT: &str = "x-snapq-fallback-attempt";
pub const HEADER_LEFTOVERS: &str = "x-snapq-leftovers";

/// Entries of history kept in the header; older ones are dropped.
pub const MAX_HISTORY: usize = 32;

/// The steps of a direct snapshot, in order: the job's state machine. A job whose
/// `x-snapq-step-done` is step *n* runs step *n+1* next; after the last it is finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// `vms/<disk>@snapq-<image_id>` exists (protected, for clone v1 clusters).
    SnapshotSource,
    /// `images/<image_id>` exists, cloned from that snapshot.
    CloneToImages,
    /// The clone no longer depends on the instance disk.
    Flatten,
    /// The snapshot of the instance disk is gone.
    RemoveSourceSnapshot,
    /// `images/<image_id>@snap` is protected, registered with Glance, and the image `active`.
    PublishImage,
}

impl Step {
    pub const ALL: [Step; 5] = [
        Step::SnapshotSource,
        Step::CloneToImages,
        Step::Flatten,
        Step::RemoveSourceSnapshot,
        Step::PublishImage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::SnapshotSource => "snapshot_source",
            Step::CloneToImages => "clone_to_images",
            Step::Flatten => "flatten",
            Step::RemoveSourceSnapshot => "remove_source_snapshot",
            Step::PublishImage => "publish_image",
        }
    }

    pub fn from_name(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The step after this one, or None after the last.
    pub fn next(self) -> Option<Step> {
        Step::ALL.into_iter().find(|s| *s > self)
    }
}

/// One line of a job's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub step: String,
    pub worker: String,
    pub at_ms: u64,
    pub seconds: f64,
    /// `done`, `already-done`, `retry`, `failed`, ...
    pub did: String,
}

/// Why a job left the work queue (`x-snapq-reason`), one name each on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// The message cannot be read as a request.
    Malformed,
    /// The fast path cannot work here: make a full copy.
    Fallback,
    /// Nothing will make the job succeed as sent.
    Park,
    /// The request names something snapq must not touch.
    Refused,
    /// A transient failure outlasted the attempt budget: make a full copy.
    RetriesExhausted,
    /// The full copy failed too.
    FallbackFailed,
}

impl DeadLetterReason {
    const ALL: [DeadLetterReason; 6] = [
        DeadLetterReason::Malformed,
        DeadLetterReason::Fallback,
        DeadLetterReason::Park,
        DeadLetterReason::Refused,
        DeadLetterReason::RetriesExhausted,
        DeadLetterReason::FallbackFailed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DeadLetterReason::Malformed => "malformed",
            DeadLetterReason::Fallback => "fallback",
            DeadLetterReason::Park => "park",
            DeadLetterReason::Refused => "refused",
            DeadLetterReason::RetriesExhausted => "retries-exhausted",
            DeadLetterReason::FallbackFailed => "fallback-failed",
        }
    }

    pub fn parse(name: &str) -> Option<DeadLetterReason> {
        DeadLetterReason::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Reasons the dead-letter consumer answers with a full copy; it parks the others.
    pub fn wants_full_copy(self) -> bool {
        matches!(
            self,
            DeadLetterReason::Fallback | DeadLetterReason::RetriesExhausted
        )
    }
}

/// The state of a job, read from and written to message headers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobState {
    pub job_id: Option<String>,
    pub step_done: Option<Step>,
    pub attempt: u32,
    pub started_ms: Option<u64>,
    pub fsid: Option<String>,
    pub source_snapshot: Option<String>,
    pub image: Option<String>,
    pub flatten_progress: Option<u8>,
    pub history: Vec<HistoryEntry>,
    pub last_error: Option<String>,
    /// `x-snapq-reason` as found (a name [`DeadLetterReason`] may not know, from another
    /// version, is kept as it is).
    pub reason: Option<String>,
    pub replays: u32,
    /// Attempts of the dead-letter consumer (0: none yet).
    pub fallback_attempt: u32,
    /// This job's own artefacts that cleanup left (`pool/image[@snap]`).
    pub leftovers: Vec<String>,
}

impl JobState {
    /// The dead-letter reason, if the job has one snapq knows.
    pub fn dead_letter_reason(&self) -> Option<DeadLetterReason> {
        self.reason.as_deref().and_then(DeadLetterReason::parse)
    }

    pub fn set_reason(&mut self, reason: DeadLetterReason) {
        self.reason = Some(reason.name().to_string());
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JobStateError {
    #[error("header {header}: {reason}")]
    InvalidHeader {
        header: &'static str,
        reason: String,
    },
}

fn invalid(header: &'static str, reason: impl Into<String>) -> JobStateError {
    JobStateError::InvalidHeader {
        header,
        reason: reason.into(),
    }
}

fn string_header(
    headers: &FieldTable,
    name: &'static str,
) -> Result<Option<String>, JobStateError> {
    match headers.inner().get(name) {
        None | Some(AMQPValue::Void) => Ok(None),
        Some(AMQPValue::LongString(s)) => String::from_utf8(s.as_bytes().to_vec())
            .map(Some)
            .map_err(|_| invalid(name, "not UTF-8")),
        Some(AMQPValue::ShortString(s)) => Ok(Some(s.as_str().to_string())),
        Some(other) => Err(invalid(name, format!("expected a string, got {other:?}"))),
    }
}

fn int_header(headers: &FieldTable, name: &'static str) -> Result<Option<i64>, JobStateError> {
    match headers.inner().get(name) {
        None | Some(AMQPValue::Void) => Ok(None),
        Some(AMQPValue::LongLongInt(n)) => Ok(Some(*n)),
        Some(AMQPValue::LongInt(n)) => Ok(Some(i64::from(*n))),
        Some(AMQPValue::ShortInt(n)) => Ok(Some(i64::from(*n))),
        Some(AMQPValue::ShortShortInt(n)) => Ok(Some(i64::from(*n))),
        Some(AMQPValue::LongUInt(n)) => Ok(Some(i64::from(*n))),
        Some(AMQPValue::ShortUInt(n)) => Ok(Some(i64::from(*n))),
        Some(AMQPValue::ShortShortUInt(n)) => Ok(Some(i64::from(*n))),
        Some(other) => Err(invalid(name, format!("expected an integer, got {other:?}"))),
    }
}

fn put_string(headers: &mut FieldTable, name: &str, value: &Option<String>) {
    if let Some(value) = value {
        headers.insert(
            name.into(),
            AMQPValue::LongString(LongString::from(value.as_bytes().to_vec())),
        );
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl JobState {
    /// Reads the job state from a delivery's headers (absent headers: a fresh job).
    pub fn from_headers(headers: Option<&FieldTable>) -> Result<JobState, JobStateError> {
        let Some(headers) = headers else {
            return Ok(JobState::fresh());
        };
        let step_done = match string_header(headers, HEADER_STEP_DONE)? {
            None => None,
            Some(name) => Some(
                Step::from_name(&name)
                    .ok_or_else(|| invalid(HEADER_STEP_DONE, format!("unknown step '{name}'")))?,
            ),
        };
        let attempt = match int_header(headers, HEADER_ATTEMPT)? {
            None => 1,
            Some(n) if (1..=1_000_000).contains(&n) => n as u32,
            Some(n) => return Err(invalid(HEADER_ATTEMPT, format!("{n} is out of range"))),
        };
        let flatten_progress = match int_header(headers, HEADER_FLATTEN_PROGRESS)? {
            None => None,
            Some(n) if (0..=100).contains(&n) => Some(n as u8),
            Some(n) => {
                return Err(invalid(
                    HEADER_FLATTEN_PROGRESS,
                    format!("{n} is not a percentage"),
                ))
            }
        };
        let history = match string_header(headers, HEADER_HISTORY)? {
            None => Vec::new(),
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| invalid(HEADER_HISTORY, format!("not a JSON history: {e}")))?,
        };
        Ok(JobState {
            job_id: string_header(headers, HEADER_JOB_ID)?,
            step_done,
            attempt,
            started_ms: int_header(headers, HEADER_STARTED_MS)?.and_then(|n| u64::try_from(n).ok()),
            fsid: string_header(headers, HEADER_FSID)?,
            source_snapshot: string_header(headers, HEADER_SOURCE_SNAPSHOT)?,
            image: string_header(headers, HEADER_IMAGE)?,
            flatten_progress,
            history,
            last_error: string_header(headers, HEADER_LAST_ERROR)?,
            reason: string_header(headers, HEADER_REASON)?,
            replays: match int_header(headers, HEADER_REPLAYS)? {
                None => 0,
                Some(n) => u32::try_from(n)
                    .map_err(|_| invalid(HEADER_REPLAYS, format!("{n} is out of range")))?,
            },
            leftovers: match string_header(headers, HEADER_LEFTOVERS)? {
                None => Vec::new(),
                Some(json) => serde_json::from_str(&json).map_err(|e| {
                    invalid(HEADER_LEFTOVERS, format!("not a JSON list of strings: {e}"))
                })?,
            },
            fallback_attempt: match int_header(headers, HEADER_FALLBACK_ATTEMPT)? {
                None => 0,
                Some(n) => u32::try_from(n).map_err(|_| {
                    invalid(HEADER_FALLBACK_ATTEMPT, format!("{n} is out of range"))
                })?,
            },
        })
    }

    pub fn fresh() -> JobState {
        JobState {
            attempt: 1,
            ..JobState::default()
        }
    }

    /// Headers carrying this state (other headers of the message are not kept).
    pub fn to_headers(&self) -> FieldTable {
        let mut headers = FieldTable::default();
        put_string(&mut headers, HEADER_JOB_ID, &self.job_id);
        put_string(
            &mut headers,
            HEADER_STEP_DONE,
            &self.step_done.map(|s| s.name().to_string()),
        );
        headers.insert(
            HEADER_ATTEMPT.into(),
            AMQPValue::LongLongInt(i64::from(self.attempt)),
        );
        if let Some(started) = self.started_ms {
            headers.insert(
                HEADER_STARTED_MS.into(),
                AMQPValue::LongLongInt(started as i64),
            );
        }
        put_string(&mut headers, HEADER_FSID, &self.fsid);
        put_string(&mut headers, HEADER_SOURCE_SNAPSHOT, &self.source_snapshot);
        put_string(&mut headers, HEADER_IMAGE, &self.image);
        if let Some(progress) = self.flatten_progress {
            headers.insert(
                HEADER_FLATTEN_PROGRESS.into(),
                AMQPValue::LongLongInt(i64::from(progress)),
            );
        }
        if !self.history.is_empty() {
            let json = serde_json::to_string(&self.history).unwrap_or_else(|_| "[]".into());
            put_string(&mut headers, HEADER_HISTORY, &Some(json));
        }
        put_string(&mut headers, HEADER_LAST_ERROR, &self.last_error);
        put_string(&mut headers, HEADER_REASON, &self.reason);
        if self.replays > 0 {
            headers.insert(
                HEADER_REPLAYS.into(),
                AMQPValue::LongLongInt(i64::from(self.replays)),
            );
        }
        if !self.leftovers.is_empty() {
            let json = serde_json::to_string(&self.leftovers).unwrap_or_else(|_| "[]".into());
            put_string(&mut headers, HEADER_LEFTOVERS, &Some(json));
        }
        if self.fallback_attempt > 0 {
            headers.insert(
                HEADER_FALLBACK_ATTEMPT.into(),
                AMQPValue::LongLongInt(i64::from(self.fallback_attempt)),
            );
        }
        headers
    }

    /// The step to run next, or None if the job is finished.
    pub fn next_step(&self) -> Option<Step> {
        match self.step_done {
            None => Some(Step::SnapshotSource),
            Some(done) => done.next(),
        }
    }

    pub fn record(&mut self, entry: HistoryEntry) {
        self.history.push(entry);
        if self.history.len() > MAX_HISTORY {
            let excess = self.history.len() - MAX_HISTORY;
            self.history.drain(..excess);
        }
    }

    /// The state after `step` completed: next step, fresh attempt budget.
    pub fn advanced(&self, step: Step) -> JobState {
        JobState {
            step_done: Some(step),
            attempt: 1,
            flatten_progress: None,
            last_error: None,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_machine_runs_the_steps_in_order_then_finishes() {
        let mut state = JobState::fresh();
        let mut seen = Vec::new();
        while let Some(step) = state.next_step() {
            seen.push(step);
            state = state.advanced(step);
        }
        assert_eq!(seen, Step::ALL);
        assert_eq!(Step::from_name("flatten"), Some(Step::Flatten));
        assert_eq!(Step::from_name("nope"), None);
    }

    #[test]
    fn headers_round_trip() {
        let mut state = JobState {
            job_id: Some("abc".into()),
            step_done: Some(Step::Flatten),
            attempt: 3,
            started_ms: Some(1234),
            fsid: Some("f".into()),
            source_snapshot: Some("vms/d@snapq-x".into()),
            image: Some("images/x".into()),
            flatten_progress: Some(40),
            last_error: Some("boom".into()),
            reason: Some("park".into()),
            replays: 2,
            fallback_attempt: 4,
            leftovers: vec!["images/x".into()],
            ..JobState::default()
        };
        state.record(HistoryEntry {
            step: "flatten".into(),
            worker: "w1".into(),
            at_ms: 5,
            seconds: 1.5,
            did: "done".into(),
        });
        let headers = state.to_headers();
        assert_eq!(JobState::from_headers(Some(&headers)), Ok(state));
    }

    #[test]
    fn missing_headers_mean_a_fresh_job() {
        assert_eq!(JobState::from_headers(None), Ok(JobState::fresh()));
        assert_eq!(
            JobState::from_headers(Some(&FieldTable::default())),
            Ok(JobState::fresh())
        );
    }

    #[test]
    fn bad_headers_are_errors_naming_the_header() {
        let mut headers = FieldTable::default();
        headers.insert(
            HEADER_STEP_DONE.into(),
            AMQPValue::LongString("warp".into()),
        );
        let err = JobState::from_headers(Some(&headers)).expect_err("unknown step");
        assert!(err.to_string().contains(HEADER_STEP_DONE), "{err}");

        let mut headers = FieldTable::default();
        headers.insert(HEADER_ATTEMPT.into(), AMQPValue::LongLongInt(0));
        assert!(JobState::from_headers(Some(&headers)).is_err());

        let mut headers = FieldTable::default();
        headers.insert(HEADER_HISTORY.into(), AMQPValue::LongString("{".into()));
        assert!(JobState::from_headers(Some(&headers)).is_err());
    }

    #[test]
    fn history_keeps_the_latest_entries() {
        let mut state = JobState::fresh();
        for i in 0..(MAX_HISTORY as u64 + 5) {
            state.record(HistoryEntry {
                step: "s".into(),
                worker: "w".into(),
                at_ms: i,
                seconds: 0.0,
                did: "done".into(),
            });
        }
        assert_eq!(state.history.len(), MAX_HISTORY);
        assert_eq!(state.history[0].at_ms, 5);
    }
}
