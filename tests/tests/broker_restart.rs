//! RabbitMQ restarts while a job runs: the worker reconnects with backoff and the job
//! completes. (Its own test binary: nothing else runs while the broker is down.)

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use snapq_common::rbd::run_blocking;
use snapq_tests::job_fixture::Job;
use snapq_tests::worker_process::WorkerProcess;

fn dev_script(args: &[&str]) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(root.join(args[0]))
        .args(&args[1..])
        .current_dir(&root)
        .status()
        .expect("run a dev script");
    assert!(status.success(), "{args:?} failed");
}

#[tokio::test]
async fn job_survives_a_broker_restart() {
    // Big enough that the job is mid-way (flatten or later steps) when the broker goes down.
    let job = Job::new("broker-restart", 512, 32).await;
    let mut worker = WorkerProcess::spawn(&job.topology, "worker", None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    job.publish(&job.request).await;

    // Wait until the job is inside Ceph (the clone exists), then restart the broker.
    let (images, id) = (job.images.clone(), job.image_id.to_string());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (images, id) = (images.clone(), id.clone());
        if run_blocking(move || images.image_exists(&id))
            .await
            .expect("look up the clone")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job never reached Ceph"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
