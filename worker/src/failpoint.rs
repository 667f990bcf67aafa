//! Test-only crash points. When `SNAPQ_TEST_FAILPOINT` names a point the worker reaches, the
//! process aborts on the spot — no cleanup, no ack — so tests can prove that a job
//! interrupted exactly there completes on the next worker. Unset (always, in production),
//! a failpoint costs one environment lookup cached at start.
//!
//! Points: `before:<step>`, `after:<step>` (step done, checkpoint not yet published) and
//! `published:<step>` (checkpoint published, delivery not yet acknowledged).

use std::sync::OnceLock;

pub const ENV_VAR: &str = "SNAPQ_TEST_FAILPOINT";

fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| std::env::var(ENV_VAR).ok().filter(|v| !v.is_empty()))
        .as_deref()
}

/// Aborts the process if `point` is the armed failpoint.
pub fn hit(point: &str) {
    if armed() == Some(point) {
        eprintln!("snapq-worker: failpoint {point} reached; aborting");
        std::process::abort();
    }
}

/// Every failpoint a worker passes through, for the crash-matrix tests.
pub fn all_points() -> Vec<String> {
    snapq_common::job::Step::ALL
        .iter()
        .flat_map(|step| {
            ["before", "after", "published"].map(|when| format!("{when}:{}", step.name()))
        })
        .collect()
}
