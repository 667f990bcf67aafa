//! The crash matrix: a worker dies (abort, no cleanup) at every failpoint — before and after
//! every step, and between publishing a checkpoint and acknowledging the delivery — and a
//! fresh worker must finish the job: exactly one active Glance image with the disk's size and
//! content, no snapshot left on the disk, nothing stray in the images pool or its trash, and
//! the job in no queue. Also: duplicate deliveries and two workers racing on one job.

use std::collections::BTreeSet;
use std::time::Duration;

use snapq_common::job::{HistoryEntry, Step};
use snapq_common::message::SnapshotRequest;
use snapq_tests::job_fixture::Job;
use snapq_tests::replies::{Received, ReplyInbox};
use snapq_tests::worker_process::WorkerProcess;

/// Where a failpoint stops the worker running step `Step::ALL[k]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crash {
    /// `before:<step>`: lease taken, the step not started.
    Before(usize),
    /// `after:<step>`: the step done, its checkpoint not published.
    After(usize),
    /// `published:<step>`: the checkpoint published (confirmed), the delivery not acknowledged.
    Published(usize),
}

impl Crash {
    fn parse(point: &str) -> Crash {
        let (when, step) = point.split_once(':').expect("a failpoint is when:step");
        let k = Step::ALL
            .iter()
            .position(|s| s.name() == step)
            .unwrap_or_else(|| panic!("unknown step in {point}"));
        match when {
            "before" => Crash::Before(k),
            "after" => Crash::After(k),
            "published" => Crash::Published(k),
            _ => panic!("unknown failpoint kind in {point}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Doomed,
    Fresh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Did {
    /// The step made its outcome.
    Done,
    /// The step re-ran and found its outcome there.
    AlreadyDone,
}

/// What one copy of the job must have completed, in order: (step, by whom, how).
type Chain = Vec<(Step, Who, Did)>;

fn completed(entry: &HistoryEntry) -> bool {
    entry.did == "done" || entry.did == "already-done"
}

/// The histories a crash at `crash` must leave, one per reply (copy of the job), steps
/// counted by `Step::ALL` index `k` of the failpoint's step:
///
/// - `before:<k>` — one reply; steps `0..k` once each, `done`, by the doomed worker; step `k`
///   once, `done`, by the fresh worker (it had not run); steps after it once each, `done`,
///   by the fresh worker.
/// - `after:<k>` — one reply; steps `0..k` once each, `done`, by the doomed worker; step `k`
///   once, `already-done`, by the fresh worker (the doomed worker made the outcome but its
///   record died with it, unpublished); steps after it once each, `done`, by the fresh
///   worker.
/// - `published:<k>` — one reply, although two messages of the job survive the crash (the
///   published checkpoint and the redelivered, unacknowledged message): the lease object
///   recorded that step `k` was done, so the stale copy is dropped instead of running the
///   job a second time. Steps `0..=k` once each, `done`, by the doomed worker; steps after
///   `k` once each, `done`, by the fresh worker. (If the stale copy is taken only after the
///   job ended, the record is gone with the lease object: it then re-checks, all
///   `already-done`, strictly after the job's last step — see [`check_resumed_at`].)
///
/// In every case no step before the resume point runs again: the exact sequences fail on
/// any extra entry. Entries that are not completions (a transient `failed` attempt) may only
/// be the fresh worker's, at the resume step or later.
fn expected_chains(crash: Crash) -> Vec<Chain> {
    let steps = Step::ALL;
    let by = |range: std::ops::Range<usize>, who: Who, did: Did| -> Chain {
        steps[range].iter().map(|s| (*s, who, did)).collect()
    };
    let n = steps.len();
    match crash {
        Crash::Before(k) => vec![[
            by(0..k, Who::Doomed, Did::Done),
            by(k..n, Who::Fresh, Did::Done),
        ]
        .concat()],
        Crash::After(k) => vec![[
            by(0..k, Who::Doomed, Did::Done),
            by(k..k + 1, Who::Fresh, Did::AlreadyDone),
            by(k + 1..n, Who::Fresh, Did::Done),
        ]
        .concat()],
        Crash::Published(k) => vec![[
            by(0..k + 1, Who::Doomed, Did::Done),
            by(k + 1..n, Who::Fresh, Did::Done),
        ]
        .concat()],
    }
}

fn show(history: &[HistoryEntry]) -> String {
    history
        .iter()
        .map(|e| format!("  {} {:<24} {:<13} {}", e.at_ms, e.step, e.did, e.worker))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `history` is exactly `chain` (see [`expected_chains`]); Err says where not.
fn matches_chain(
    history: &[HistoryEntry],
    chain: &Chain,
    doomed: u32,
    fresh: u32,
) -> Result<(), String> {
    let who = |entry: &HistoryEntry| {
        if entry.worker.ends_with(&format!(":{doomed}")) {
            Some(Who::Doomed)
        } else if entry.worker.ends_with(&format!(":{fresh}")) {
            Some(Who::Fresh)
        } else {
            None
        }
    };
    let resume = chain
        .iter()
        .position(|(_, w, _)| *w == Who::Fresh)
        .unwrap_or(chain.len());
    for entry in history.iter().filter(|e| !completed(e)) {
        let at = Step::from_name(&entry.step).and_then(|s| Step::ALL.iter().position(|x| *x == s));
        if who(entry) != Some(Who::Fresh) || at.is_none_or(|i| i < resume) {
            return Err(format!("an attempt before the resume point: {entry:?}"));
        }
    }
    let done: Vec<&HistoryEntry> = history.iter().filter(|e| completed(e)).collect();
    if done.len() != chain.len() {
        return Err(format!(
            "{} completed steps, expected {}",
            done.len(),
            chain.len()
        ));
    }
    for (i, (entry, (step, w, did))) in done.iter().zip(chain).enumerate() {
        let did_ok = match did {
            Did::Done => entry.did == "done",
            Did::AlreadyDone => entry.did == "already-done",
        };
        if entry.step != step.name() || who(entry) != Some(*w) || !did_ok {
            return Err(format!(
                "completion {i} is {} {} by {}, expected {} {did:?} by the {w:?} worker",
                entry.step,
                entry.did,
                entry.worker,
                step.name()
            ));
        }
    }
    Ok(())
}

/// Checks the resume point of a crash at `point` against the finished job's histories (one
/// per reply to its call); see [`expected_chains`].
fn check_resumed_at(
    point: &str,
    histories: &[Vec<HistoryEntry>],
    doomed: u32,
    fresh: u32,
) -> Result<(), String> {
    let crash = Crash::parse(point);
    let mut chains = expected_chains(crash);
    if let (Crash::Published(k), 2) = (crash, histories.len()) {
        // The stale copy may be taken only after the job ended and its lease object (with
        // the progress record) was removed: it then re-checks every step from `k`, finds
        // each already done, and answers again. It must not have run at the same time.
        let n = Step::ALL.len();
        let stale: Chain = Step::ALL[..k]
            .iter()
            .map(|s| (*s, Who::Doomed, Did::Done))
            .chain(
                Step::ALL[k..n]
                    .iter()
                    .map(|s| (*s, Who::Fresh, Did::AlreadyDone)),
            )
            .collect();
        let ended = |h: &[HistoryEntry]| h.iter().map(|e| e.at_ms).max().unwrap_or(0);
        let began_after = |h: &[HistoryEntry], at: u64| {
            h.iter()
                .filter(|e| e.did == "already-done")
                .all(|e| e.at_ms > at)
        };
        let sequential = (0..2).any(|i| {
            matches_chain(&histories[i], &stale, doomed, fresh).is_ok()
                && began_after(&histories[i], ended(&histories[1 - i]))
        });
        if !sequential {
            return Err(
                "two replies, and the second copy did not run after the job had ended".into(),
            );
        }
        chains.push(stale);
    }
    if histories.len() != chains.len() {
        return Err(format!(
            "{} replies to the job's call, expected {}",
            histories.len(),
            chains.len()
        ));
    }
    // Each expected chain is matched by a distinct reply, in any order.
    let mut unmatched: Vec<usize> = (0..histories.len()).collect();
    for chain in &chains {
        let mut why = Vec::new();
        let found = unmatched.iter().position(|&i| {
            match matches_chain(&histories[i], chain, doomed, fresh) {
                Ok(()) => true,
                Err(e) => {
                    why.push(format!("reply {i}: {e}"));
                    false
                }
            }
        });
        match found {
            Some(at) => {
                unmatched.remove(at);
            }
            None => return Err(format!("no reply shows {chain:?}: {}", why.join("; "))),
        }
    }
    // Each step's outcome was made once, whichever copy of the job made it; the step of an
    // `after:` crash was made by the doomed worker, whose record of it was never published.
    let unrecorded = match Crash::parse(point) {
        Crash::After(k) => Some(Step::ALL[k]),
        _ => None,
    };
    let distinct: BTreeSet<(String, String, u64, String)> = histories
        .iter()
        .flatten()
        .map(|e| (e.step.clone(), e.worker.clone(), e.at_ms, e.did.clone()))
        .collect();
    for step in Step::ALL {
        let made = distinct
            .iter()
            .filter(|(s, _, _, did)| s == step.name() && did == "done")
            .count();
        let expected = if unrecorded == Some(step) { 0 } else { 1 };
        if made != expected {
            return Err(format!(
                "{} made {made} times in the histories, expected {expected}",
                step.name()
            ));
        }
    }
    Ok(())
}

/// Asserts that every reply is a direct success and that their histories show the resume
/// point of a crash at `point` ([`check_resumed_at`]).
fn assert_resumed_at(point: &str, replies: &[Received], doomed: u32, fresh: u32) {
    let histories: Vec<Vec<HistoryEntry>> = replies.iter().map(Received::history).collect();
    let shown = histories
        .iter()
        .enumerate()
        .map(|(i, h)| format!("reply {i}:\n{}", show(h)))
        .collect::<Vec<_>>()
        .join("\n");
    let context = format!("{point} (doomed pid {doomed}, fresh pid {fresh}):\n{shown}");
    for received in replies {
        assert!(
            received.reply.failure.is_none() && received.method() == Some("direct"),
            "{context}\na reply that is not a direct success: {:?}",
            received.reply
        );
    }
    if let Err(e) = check_resumed_at(point, &histories, doomed, fresh) {
        panic!("{context}\n{e}");
    }
}

async fn crash_then_resume(point: &str) {
    let job = Job::new(&format!("crash-{}", point.replace(':', "-")), 64, 4).await;
    // A call, so the finished job's history comes back in its reply (or replies).
    let inbox = ReplyInbox::open().await;
    let call = inbox.call(&job.request);
    let msg_id = call.reply.as_ref().expect("a call").msg_id.clone();
    let mut doomed = WorkerProcess::spawn(&job.topology, "doomed", Some(point));
    let doomed_pid = doomed.child.id().expect("the doomed worker's pid");
    tokio::time::sleep(Duration::from_millis(500)).await;
    job.publish(&call).await;
    let status = doomed.wait_exit(Duration::from_secs(90)).await;
    assert!(
        !status.success(),
        "the worker aborted at {point}: {status:?}"
    );
    assert!(
        doomed
            .log_text()
            .contains(&format!("failpoint {point} reached")),
        "{}",
        doomed.log_text()
    );

    let mut fresh = WorkerProcess::spawn(&job.topology, "fresh", None);
    let fresh_pid = fresh.child.id().expect("the fresh worker's pid");
    job.wait_active().await;
    job.wait_queues_empty().await;
    let status = fresh.terminate(Duration::from_secs(60)).await;
    assert!(
        status.success(),
        "SIGTERM stops the worker cleanly: {status:?}"
    );
    // Every copy of the job has answered once the worker is gone; the inbox's last drain
    // takes what is still queued.
    let replies = {
        let expected = expected_chains(Crash::parse(point)).len();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while inbox.replies_to(&msg_id).len() < expected && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        inbox.replies_to(&msg_id)
    };
    assert_resumed_at(point, &replies, doomed_pid, fresh_pid);
    job.assert_converged().await;
    job.clean_up().await;
    inbox.close().await;
}

macro_rules! crash_cases {
    ($($name:ident => $point:literal,)*) => {$(
        #[tokio::test]
        async fn $name() {
            crash_then_resume($point).await;
        }
    )*};
}

crash_cases! {
    resumes_after_crash_before_snapshot_source => "before:snapshot_source",
    resumes_after_crash_after_snapshot_source => "after:snapshot_source",
    resumes_after_crash_between_snapshot_source_checkpoint_and_ack => "published:snapshot_source",
    resumes_after_crash_before_clone_to_images => "before:clone_to_images",
    resumes_after_crash_after_clone_to_images => "after:clone_to_images",
    resumes_after_crash_between_clone_to_images_checkpoint_and_ack => "published:clone_to_images",
    resumes_after_crash_before_flatten => "before:flatten",
    resumes_after_crash_after_flatten => "after:flatten",
    resumes_after_crash_between_flatten_checkpoint_and_ack => "published:flatten",
    resumes_after_crash_before_remove_source_snapshot => "before:remove_source_snapshot",
    resumes_after_crash_after_remove_source_snapshot => "after:remove_source_snapshot",
    resumes_after_crash_between_remove_source_snapshot_checkpoint_and_ack => "published:remove_source_snapshot",
    resumes_after_crash_before_publish_image => "before:publish_image",
    resumes_after_crash_after_publish_image => "after:publish_image",
}

#[test]
fn the_matrix_covers_every_failpoint() {
    let source = include_str!("crash_matrix.rs");
    for point in snapq_worker::failpoint::all_points() {
        if point == "published:publish_image" {
            // The last step publishes no checkpoint: it acknowledges the finished job.
            continue;
        }
        assert!(
            source.contains(&format!("=> \"{point}\"")),
            "no crash case for {point}"
        );
    }
}

/// Histories as a job crashed at `point` and resumed correctly would carry them (doomed
/// worker pid 1, fresh worker pid 2); the racing steps of `published:` are made by the copy
/// that resumed from the checkpoint.
fn synthetic_histories(point: &str) -> Vec<Vec<HistoryEntry>> {
    let mut at_ms = 1_000;
    expected_chains(Crash::parse(point))
        .iter()
        .map(|chain| {
            chain
                .iter()
                .map(|(step, who, did)| {
                    at_ms += 10;
                    let did = match did {
                        Did::Done => "done",
                        Did::AlreadyDone => "already-done",
                    };
                    let pid = if *who == Who::Doomed { 1 } else { 2 };
                    // The doomed worker's entries are shared by both copies of the job.
                    let at = if *who == Who::Doomed {
                        Step::ALL.iter().position(|s| s == step).unwrap() as u64
                    } else {
                        at_ms
                    };
                    HistoryEntry {
                        step: step.name().into(),
                        worker: format!("snapq-worker:localhost:{pid}"),
                        at_ms: at,
                        seconds: 0.001,
                        did: did.into(),
                    }
                })
                .collect()
        })
        .collect()
}

#[test]
fn the_resume_point_check_fails_when_earlier_steps_run_again() {
    for point in snapq_worker::failpoint::all_points() {
        if point == "published:publish_image" {
            continue;
        }
        let good = synthetic_histories(&point);
        assert_eq!(check_resumed_at(&point, &good, 1, 2), Ok(()), "{point}");
        let k = Step::ALL
            .iter()
            .position(|s| point.ends_with(&format!(":{}", s.name())))
            .unwrap();
        // Every copy's fresh part re-running an earlier step (found already done), made
        // again (done), or merely attempted: each must be caught.
        for earlier in 0..k {
            for did in ["already-done", "done", "failed"] {
                let mut bad = good.clone();
                let copy = &mut bad[0];
                let resume = copy
                    .iter()
                    .position(|e| e.worker.ends_with(":2"))
                    .unwrap_or(copy.len());
                copy.insert(
                    resume,
                    HistoryEntry {
                        step: Step::ALL[earlier].name().into(),
                        worker: "snapq-worker:localhost:2".into(),
                        at_ms: 999_999,
                        seconds: 0.001,
                        did: did.into(),
                    },
                );
                assert!(
                    check_resumed_at(&point, &bad, 1, 2).is_err(),
                    "{point}: {} {did} again went unnoticed",
                    Step::ALL[earlier].name()
                );
            }
        }
        // The step after the crash running twice, or not at all, is caught too.
        let resumed_step = match Crash::parse(&point) {
            Crash::Published(k) => k + 1,
            Crash::Before(k) | Crash::After(k) => k,
        };
        if resumed_step < Step::ALL.len() {
            let mut twice = good.clone();
            let i = twice[0]
                .iter()
                .position(|e| e.step == Step::ALL[resumed_step].name() && e.worker.ends_with(":2"))
                .unwrap();
            let again = HistoryEntry {
                did: "already-done".into(),
                at_ms: 888_888,
                ..twice[0][i].clone()
            };
            twice[0].insert(i + 1, again);
            assert!(
                check_resumed_at(&point, &twice, 1, 2).is_err(),
                "{point}: twice"
            );
            let mut skipped = good.clone();
            skipped[0].remove(i);
            assert!(
                check_resumed_at(&point, &skipped, 1, 2).is_err(),
                "{point}: skipped"
            );
        }
        // A doomed worker's step claimed by the fresh one (the job restarted from scratch).
        if k > 0 {
            let mut restarted = good.clone();
            for copy in &mut restarted {
                copy[0].worker = "snapq-worker:localhost:2".into();
            }
            assert!(
                check_resumed_at(&point, &restarted, 1, 2).is_err(),
                "{point}: restarted"
            );
        }
    }
}

#[tokio::test]
async fn duplicate_delivery_converges_on_one_image() {
    let job = Job::new("dup-delivery", 64, 4).await;
    let mut worker = WorkerProcess::spawn(&job.topology, "worker", None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The same message twice, as after a publish whose confirm was lost.
    job.publish(&job.request).await;
    job.publish(&job.request).await;
    job.wait_active().await;
    job.wait_queues_empty().await;
    assert!(worker.terminate(Duration::from_secs(60)).await.success());
    job.assert_converged().await;
    job.clean_up().await;
}

#[tokio::test]
async fn two_workers_racing_on_one_job_converge() {
    let job = Job::new("race", 64, 4).await;
    let mut first = WorkerProcess::spawn(&job.topology, "first", None);
    let mut second = WorkerProcess::spawn(&job.topology, "second", None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Two requests for the same image (different message ids), one per worker.
    let other = SnapshotRequest::new(job.request.disk.clone(), job.image_id, "race".into());
    job.publish(&job.request).await;
    job.publish(&other).await;
    job.wait_active().await;
    job.wait_queues_empty().await;
    assert!(first.terminate(Duration::from_secs(60)).await.success());
    assert!(second.terminate(Duration::from_secs(60)).await.success());
    let logs = first.log_text() + &second.log_text();
    assert!(!logs.contains("ERROR"), "no job failed: {logs}");
    job.assert_converged().await;
    job.clean_up().await;
}

#[tokio::test]
async fn long_flatten_is_checkpointed_with_its_progress_and_completes() {
    let job = Job::new("long-flatten", 512, 64).await;
    // A flatten hold of zero: every delivery polls once, then checkpoints the progress.
    let mut worker =
        WorkerProcess::spawn_with(&job.topology, "worker", &[("SNAPQ_FLATTEN_HOLD", "0")]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    job.publish(&job.request).await;
    job.wait_active().await;
    job.wait_queues_empty().await;
    assert!(worker.terminate(Duration::from_secs(60)).await.success());
    let log = worker.log_text();
    assert!(
        log.contains("flatten task running in the Ceph manager"),
        "{log}"
    );
    assert!(
        log.contains("flatten still running; checkpointing its progress"),
        "{log}"
    );
    job.assert_converged().await;
    job.clean_up().await;
}

#[tokio::test]
async fn disk_in_another_cluster_than_glances_store_goes_straight_to_the_full_copy() {
    let job = Job::new("other-cluster", 64, 4).await;
    let mut worker = WorkerProcess::spawn_with(
        &job.topology,
        "worker",
        &[(
            "SNAPQ_GLANCE_STORE_FSID",
            "00000000-0000-4000-8000-000000000000",
        )],
    );
    let mut dead_letter = WorkerProcess::spawn_dead_letter(&job.topology, "dead-letter");
    tokio::time::sleep(Duration::from_millis(500)).await;
    job.publish(&job.request).await;
    job.wait_active().await;
    job.wait_queues_empty().await;
    assert!(worker.terminate(Duration::from_secs(60)).await.success());
    assert!(dead_letter
        .terminate(Duration::from_secs(60))
        .await
        .success());
    let log = dead_letter.log_text();
    assert!(log.contains("falling back to a full copy"), "{log}");
    assert!(
        log.contains("Glance stores images in cluster 00000000"),
        "{log}"
    );
    assert!(log.contains("full copy done"), "{log}");
    job.clean_up().await;
}
