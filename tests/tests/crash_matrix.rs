//! The crash matrix: a worker dies (abort, no cleanup) at every failpoint — before and after
//! every step, and between publishing a checkpoint and acknowledging the delivery — and a
//! fresh worker must finish the job: exactly one active Glance image with the disk's size and
//! content, no snapshot left on the disk, nothing stray in the images pool or its trash, and
//! the job in no queue. Also: duplicate deliveries and two workers racing on one job.

use std::time::Duration;

use snapq_common::message::SnapshotRequest;
use snapq_tests::job_fixture::Job;
use snapq_tests::worker_process::WorkerProcess;

async fn crash_then_resume(point: &str) {
    let job = Job::new(&format!("crash-{}", point.replace(':', "-")), 64, 4).await;
    let mut doomed = WorkerProcess::spawn(&job.topology, "doomed", Some(point));
    tokio::time::sleep(Duration::from_millis(500)).await;
    job.publish(&job.request).await;
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
    job.wait_active().await;
    job.wait_queues_empty().await;
    let status = fresh.terminate(Duration::from_secs(60)).await;
    assert!(
        status.success(),
        "SIGTERM stops the worker cleanly: {status:?}"
    );
    let log = fresh.log_text();
    if point != "before:snapshot_source" {
        assert!(
            log.contains("resuming job"),
            "the fresh worker resumed the job: {log}"
        );
    }
    job.assert_converged().await;
    job.clean_up().await;
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
