//! Outages and shutdowns while a job runs (its own test binary: these stop shared services).
//! The broker restarts: the worker reconnects and the job completes. Glance is down: the
//! failing step is retried through the delay queues until Glance is back. SIGTERM in the
//! middle of a job: the worker exits 0 and the next worker finishes the job.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use snapq_common::rbd::run_blocking;
use snapq_tests::job_fixture::Job;
use snapq_tests::worker_process::WorkerProcess;

/// These tests stop shared services: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn dev_script(args: &[&str]) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(root.join(args[0]))
        .args(&args[1..])
        .current_dir(&root)
        .status()
        .expect("run a dev script");
    assert!(status.success(), "{args:?} failed");
}

/// Waits until the job's clone exists in Glance's pool: the job is inside Ceph.
async fn wait_for_clone(job: &Job) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (images, id) = (job.images.clone(), job.image_id.to_string());
        if run_blocking(move || images.image_exists(&id))
            .await
            .expect("look up the clone")
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job never reached Ceph"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_log(worker: &WorkerProcess, text: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !worker.log_text().contains(text) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no '{text}' in {}",
            worker.log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn job_survives_a_broker_restart() {
    let _alone = ONE_AT_A_TIME.lock().await;
    // Big enough that the job is mid-way (flatten or later steps) when the broker goes down.
    let job = Job::new("broker-restart", 512, 32).await;
    let mut worker = WorkerProcess::spawn(&job.topology, "worker", None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    job.publish(&job.request).await;
    wait_for_clone(&job).await;
    dev_script(&["dev/down", "rabbitmq"]);
    dev_script(&["dev/up", "rabbitmq"]);

    job.wait_active().await;
    job.wait_queues_empty().await;
    assert!(worker.terminate(Duration::from_secs(60)).await.success());
    let log = worker.log_text();
    assert!(
        log.contains("broker connection lost; reconnecting"),
        "the worker reconnected: {log}"
    );
    job.assert_converged().await;
    job.clean_up().await;
}

#[tokio::test]
async fn glance_outage_is_retried_until_glance_is_back() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let job = Job::new("glance-outage", 64, 4).await;
    dev_script(&["dev/down", "glance"]);
    let mut worker = WorkerProcess::spawn(&job.topology, "worker", None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    job.publish(&job.request).await;
    wait_for_log(&worker, "transient failure; will retry").await;
    dev_script(&["dev/up", "glance"]);

    job.wait_active().await;
    job.wait_queues_empty().await;
    assert!(worker.terminate(Duration::from_secs(60)).await.success());
    let log = worker.log_text();
    assert!(
        log.contains("resuming job resume_after=\"remove_source_snapshot\""),
        "{log}"
    );
    job.assert_converged().await;
    job.clean_up().await;
}

#[tokio::test]
async fn sigterm_mid_job_exits_cleanly_and_loses_nothing() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let job = Job::new("sigterm", 1024, 128).await;
    // A short grace period, so the flatten (a manager task, polled) outlives it.
    let mut first =
        WorkerProcess::spawn_with(&job.topology, "first", &[("SNAPQ_SHUTDOWN_GRACE", "1")]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    job.publish(&job.request).await;
    wait_for_log(&first, "flatten task running in the Ceph manager").await;
    let status = first.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "SIGTERM exits 0: {status:?}");

    let mut second = WorkerProcess::spawn(&job.topology, "second", None);
    job.wait_active().await;
    job.wait_queues_empty().await;
    assert!(second.terminate(Duration::from_secs(60)).await.success());
    assert!(
        second.log_text().contains("resuming job"),
        "{}",
        second.log_text()
    );
    job.assert_converged().await;
    job.clean_up().await;
}
