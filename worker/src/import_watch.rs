//! Is Glance's import of a location still going, or did Glance lose it?
//!
//! Glance runs a location import as a task in a thread pool of the API process that took the
//! request, and marks the image with the task (`os_glance_import_task`) as its import lock.
//! A Glance restart loses the tasks that were queued or running, but the lock stays: Glance
//! itself only breaks a lock after 60 minutes (120 for a task still `pending`), when the next
//! registration comes, and offers no call to break it sooner (`os_glance_*` properties are
//! reserved). snapq must not register again while the lock is valid, so it needs to tell a
//! lost task from a slow one.
//!
//! The proof used: a task Glance queued *after* ours has started and kept going for
//! `lost_after` past the last time ours changed, while ours has neither started nor finished.
//! Glance's pool takes tasks in order, so a healthy process would have started ours first;
//! `lost_after` leaves room for an API process with a longer queue than another. Only
//! Glance's own timestamps are compared, so clock skew between hosts does not matter.

use std::time::Duration;

use snapq_common::glance::{TaskLookup, TaskRecord};

use crate::context::JobContext;
use crate::error::JobError;

/// How many of Glance's newest tasks are looked at for one queued after ours.
const NEWEST_TASKS: u32 = 100;

/// What is known of the task holding an image's import lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Running, or waiting its turn.
    Alive,
    /// Glance has no such task: Glance treats the lock as stale and takes it over at the next
    /// registration.
    Missing,
    /// Glance lost the task; the text says how that is known.
    Lost(String),
    /// This user may not read Glance's tasks, so nothing can be told.
    Unknown,
}

/// The verdict on `ours` given Glance's newest tasks (any order).
pub fn judge(ours: &TaskRecord, newest: &[TaskRecord], lost_after: Duration) -> Verdict {
    if ours.ended() {
        return Verdict::Lost(format!(
            "task {} ended '{}' but still holds the import lock",
            ours.id, ours.status
        ));
    }
    let (Some(created), Some(updated)) = (ours.created(), ours.updated()) else {
        return Verdict::Alive;
    };
    let overtaken_by = newest.iter().find(|later| {
        later.id != ours.id
            && later.started()
            && later.created().is_some_and(|c| c > created)
            && later
                .updated()
                .and_then(|u| u.duration_since(updated).ok())
                .is_some_and(|ahead| ahead >= lost_after)
    });
    match overtaken_by {
        Some(later) => Verdict::Lost(format!(
            "task {} is still '{}' since {}, while task {} queued after it ran to '{}' by {}",
            ours.id,
            ours.status,
            ours.updated_at.as_deref().unwrap_or("?"),
            later.id,
            later.status,
            later.updated_at.as_deref().unwrap_or("?"),
        )),
        None => Verdict::Alive,
    }
}

/// Asks Glance about the task `task` holding the job's image lock.
pub async fn verdict(
    ctx: &JobContext,
    task: &str,
    lost_after: Duration,
) -> Result<Verdict, JobError> {
    let ours = match ctx.glance.task(task).await? {
        TaskLookup::Found(record) => record,
        TaskLookup::Missing => return Ok(Verdict::Missing),
        TaskLookup::Hidden => return Ok(Verdict::Unknown),
    };
    if ours.ended() {
        return Ok(judge(&ours, &[], lost_after));
    }
    Ok(match ctx.glance.newest_tasks(NEWEST_TASKS).await? {
        Some(newest) => judge(&ours, &newest, lost_after),
        None => Verdict::Unknown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, status: &str, created: &str, updated: &str) -> TaskRecord {
        TaskRecord {
            id: id.into(),
            status: status.into(),
            message: None,
            created_at: Some(created.into()),
            updated_at: Some(updated.into()),
        }
    }

    const AFTER: Duration = Duration::from_secs(60);

    #[test]
    fn a_pending_task_overtaken_long_enough_by_a_later_one_is_lost() {
        let ours = task(
            "ours",
            "pending",
            "2026-12-01T10:00:00Z",
            "2026-12-01T10:00:00Z",
        );
        let later = |status, updated| task("later", status, "2026-12-01T10:00:05Z", updated);
        assert_eq!(
            judge(&ours, &[later("success", "2026-12-01T10:00:30Z")], AFTER),
            Verdict::Alive,
            "overtaken, but not for long enough"
        );
        assert_eq!(
            judge(&ours, &[later("pending", "2026-12-01T10:05:00Z")], AFTER),
            Verdict::Alive,
            "the later task has not started either"
        );
        let Verdict::Lost(why) =
            judge(&ours, &[later("processing", "2026-12-01T10:01:00Z")], AFTER)
        else {
            panic!("a later task running for a minute proves ours lost");
        };
        assert!(why.contains("task later queued after it"), "{why}");
    }

    #[test]
    fn only_tasks_queued_after_ours_count() {
        let ours = task(
            "ours",
            "pending",
            "2026-12-01T10:00:05Z",
            "2026-12-01T10:00:05Z",
        );
        let earlier = task(
            "earlier",
            "processing",
            "2026-12-01T10:00:00Z",
            "2026-12-01T10:09:00Z",
        );
        let same_second = task(
            "tie",
            "success",
            "2026-12-01T10:00:05Z",
            "2026-12-01T10:09:00Z",
        );
        assert_eq!(judge(&ours, &[earlier, same_second], AFTER), Verdict::Alive);
        assert_eq!(
            judge(&ours, std::slice::from_ref(&ours), AFTER),
            Verdict::Alive
        );
    }

    #[test]
    fn an_ended_task_still_holding_the_lock_is_lost_and_a_timeless_one_alive() {
        let ended = task(
            "ours",
            "failure",
            "2026-12-01T10:00:00Z",
            "2026-12-01T10:00:01Z",
        );
        assert!(matches!(judge(&ended, &[], AFTER), Verdict::Lost(_)));
        let mut timeless = task("ours", "processing", "", "");
        timeless.created_at = None;
        let later = task(
            "later",
            "success",
            "2026-12-01T10:00:05Z",
            "2026-12-02T10:00:00Z",
        );
        assert_eq!(judge(&timeless, &[later], AFTER), Verdict::Alive);
    }
}
