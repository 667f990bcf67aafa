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
use snapq_tests::{rabbit, Services};

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

/// Runs `snapq jobs ...` against the job's topology; returns (success, stdout + stderr).
fn snapq_jobs(job: &Job, args: &[&str]) -> (bool, String) {
    let services = Services::from_env();
    let output = Command::new(snapq_tests::worker_process::binary("snapq"))
        .arg("jobs")
        .args(args)
        .env("SNAPQ_AMQP_URL", &services.amqp_url)
        .env("SNAPQ_TOPIC", &job.topology.config.topic)
        .env(
            "SNAPQ_DELIVERY_LIMIT",
            job.topology.config.delivery_limit.to_string(),
        )
        .env("SNAPQ_CEPH_CONF", &services.ceph_conf)
        .env("SNAPQ_CEPH_USER", "nova")
        .env("SNAPQ_GLANCE_URL", &services.glance_url)
        .output()
        .expect("run snapq jobs");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

async fn wait_for_depth(queue: &str, depth: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while rabbit::depth(queue).await != depth {
        assert!(
            tokio::time::Instant::now() < deadline,
            "queue {queue} never held {depth}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn failed_fallback_is_parked_and_replays_once_glance_is_back() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let job = Job::new("replay", 64, 4).await;
    // Nova's user cannot write to Glance's pool: the fast path dead-letters the job.
    let mut worker =
        WorkerProcess::spawn_with(&job.topology, "worker", &[("SNAPQ_CEPH_USER", "nova-ro")]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    job.publish(&job.request).await;
    wait_for_depth(&job.topology.dead_letter_queue, 1).await;

    // The full copy fails too (Glance is down): it waits the outage out with backoff, and
    // once its attempt budget (2 here) is spent the job is parked.
    dev_script(&["dev/down", "glance"]);
    let mut dead_letter = WorkerProcess::spawn_with(
        &job.topology,
        "dead-letter",
        &[("SNAPQ_ROLE", "dead-letter"), ("SNAPQ_MAX_ATTEMPTS", "2")],
    );
    wait_for_depth(&job.topology.parked_queue, 1).await;
    dev_script(&["dev/up", "glance"]);

    let job_id = job.request.unique_id.clone();
    let (ok, listing) = snapq_jobs(&job, &["list"]);
    assert!(
        ok && listing.contains(&job_id) && listing.contains("fallback-failed"),
        "{listing}"
    );
    assert_eq!(
        rabbit::depth(&job.topology.parked_queue).await,
        1,
        "listing keeps the job parked"
    );
    let (ok, shown) = snapq_jobs(&job, &["show", &job_id]);
    assert!(ok && shown.contains("last error"), "{shown}");

    let (ok, replayed) = snapq_jobs(&job, &["replay", &job_id, "--mode", "fallback"]);
    assert!(ok, "{replayed}");
    job.wait_active().await;
    job.wait_queues_empty().await;
    assert!(worker.terminate(Duration::from_secs(60)).await.success());
    assert!(dead_letter
        .terminate(Duration::from_secs(60))
        .await
        .success());
    let record = job.glance.get_image(job.image_id).await.expect("image");
    assert_eq!(record.size, Some(64 * 1024 * 1024));

    // A parked job whose disk is gone cannot be replayed, and says why.
    let orphan = Job::new("replay-orphan", 8, 1).await;
    let mut worker = WorkerProcess::spawn(&orphan.topology, "worker", None);
    let mut dead_letter = WorkerProcess::spawn_dead_letter(&orphan.topology, "dead-letter");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (vms, disk) = (orphan.vms.clone(), orphan.disk.clone());
    run_blocking(move || vms.remove_image(&disk))
        .await
        .expect("remove the disk");
    orphan.publish(&orphan.request).await;
    wait_for_depth(&orphan.topology.parked_queue, 1).await;
    let (ok, refused) = snapq_jobs(&orphan, &["replay", &orphan.request.unique_id]);
    assert!(!ok, "replaying a job without its disk fails");
    assert!(refused.contains("no longer exists"), "{refused}");
    assert_eq!(
        rabbit::depth(&orphan.topology.parked_queue).await,
        1,
        "it stays parked"
    );
    let (ok, purged) = snapq_jobs(&orphan, &["purge", &orphan.request.unique_id]);
    assert!(ok, "{purged}");
    assert_eq!(rabbit::depth(&orphan.topology.parked_queue).await, 0);
    assert!(worker.terminate(Duration::from_secs(60)).await.success());
    assert!(dead_letter
        .terminate(Duration::from_secs(60))
        .await
        .success());
    let _ = orphan.glance.delete_image(orphan.image_id).await;
    rabbit::delete_queues(&orphan.topology.all_queues()).await;
    job.clean_up().await;
}
