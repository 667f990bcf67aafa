//! The dead-letter consumer: full-copy fallback and the parking lot.

use std::process::Command;
use std::time::Duration;

use snapq_common::rbd::run_blocking;
use snapq_tests::disks::{make_disk, MIB};
use snapq_tests::worker_harness::{glance_client, snapshot_call, test_topology, RunningWorker};
use snapq_tests::{cluster_as, rabbit, Services};
use snapq_worker::Role;
use uuid::Uuid;

/// md5 of the image's bytes, through `rbd export - | md5sum` (no local file).
fn md5_of(spec: &str) -> String {
    let services = Services::from_env();
    let out = Command::new("sh")
        .args([
            "-c",
            "rbd -c \"$0\" --id nova export \"$1\" - 2>/dev/null | md5sum",
            &services.ceph_conf,
            spec,
        ])
        .output()
        .expect("rbd export | md5sum");
    assert!(out.status.success(), "rbd export | md5sum failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn permission_denied_on_the_images_pool_falls_back_to_a_full_copy_of_the_same_data() {
    let services = Services::from_env();
    let cluster = cluster_as("nova").await;
    let vms = cluster.pool(&services.nova_pool).expect("nova pool");
    let images = cluster.pool(&services.glance_pool).expect("glance pool");
    let disk = format!("{}_disk", Uuid::new_v4());
    make_disk(&vms, &disk, 256 * MIB, 8).await;

    // Nova's user may not write to Glance's pool: the fast path cannot work.
    let topology = test_topology("fallback-eperm");
    let worker = RunningWorker::start_as(topology.clone(), "nova-ro", Role::Work).await;
    let dead_letter = RunningWorker::start_as(topology.clone(), "nova-ro", Role::DeadLetter).await;
    let glance = glance_client(&services.glance_url);
    let (image, producer, request) =
        snapshot_call(&glance, &topology, &disk, "fallback-eperm").await;
    let reply = producer
        .call(request, Duration::from_secs(300))
        .await
        .expect("a reply");
    assert!(reply.failure.is_none(), "{:?}", reply.failure);
    let result = reply.result.expect("a result");
    assert_eq!(result["method"], "fallback");
    assert_eq!(
        result["read_bytes"],
        8 * 4 * MIB,
        "only allocated data was read"
    );

    let record = glance.get_image(image.id).await.expect("image");
    assert_eq!(record.status, "active");
    assert_eq!(record.size, Some(256 * MIB));
    let disk_spec = format!("{}/{disk}", services.nova_pool);
    assert_eq!(
        record.checksum.as_deref(),
        Some(md5_of(&disk_spec).as_str()),
        "same data as the disk"
    );

    let (images2, vms2, id, disk2) = (
        images.clone(),
        vms.clone(),
        image.id.to_string(),
        disk.clone(),
    );
    let (source_snaps, image_used, source_used) = run_blocking(move || {
        let source = vms2.open_read_only(&disk2, None)?;
        let stored = images2.open_read_only(&id, Some("snap"))?;
        Ok((
            source.snapshots()?,
            stored.used_bytes()?,
            source.used_bytes()?,
        ))
    })
    .await
    .expect("inspect Ceph");
    assert!(
        source_snaps.is_empty(),
        "no snapshot is left on the disk: {source_snaps:?}"
    );
    // Glance's thin provisioning skips all-zero 8 MiB chunks: a 4 MiB extent keeps at most its
    // 8 MiB chunk.
    assert!(
        image_used <= 2 * source_used,
        "sparse: {image_used} bytes for {source_used}"
    );
    for queue in topology.all_queues() {
        assert_eq!(rabbit::depth(queue).await, 0, "queue {queue} is empty");
    }

    producer.close().await;
    worker.stop().await;
    dead_letter.stop().await;
    glance.delete_image(image.id).await.expect("delete image");
    run_blocking(move || vms.remove_image(&disk))
        .await
        .expect("remove disk");
    rabbit::delete_queues(&topology.all_queues()).await;
}

#[tokio::test]
async fn malformed_and_permanently_failed_jobs_are_parked_with_their_reason() {
    let services = Services::from_env();
    let topology = test_topology("fallback-park");
    let worker = RunningWorker::start_as(topology.clone(), "nova", Role::Work).await;
    let dead_letter = RunningWorker::start_as(topology.clone(), "nova", Role::DeadLetter).await;
    let (_connection, channel) = rabbit::channel().await;
    let poison = br#"{"oslo.version": "2.0", "oslo.message": "{\"method\": \"drop_tables\", \"args\": {}}"}"#;
    rabbit::publish_raw(&channel, &topology, poison).await;
    let parked = rabbit::get_one(&topology.parked_queue, Duration::from_secs(30))
        .await
        .expect("the malformed message is parked");
    assert_eq!(parked.delivery.data, poison.to_vec(), "kept as sent");
    let state = rabbit::job_state(&parked);
    assert_eq!(state.reason.as_deref(), Some("malformed"));
    assert!(state.last_error.unwrap_or_default().contains("drop_tables"));

    // A request for a disk that does not exist fails for good: parked, with its history.
    let glance = glance_client(&services.glance_url);
    let missing = format!("{}_disk", Uuid::new_v4());
    let (image, producer, request) =
        snapshot_call(&glance, &topology, &missing, "fallback-park").await;
    producer.cast(&request).await.expect("publish");
    let parked = rabbit::get_one(&topology.parked_queue, Duration::from_secs(30))
        .await
        .expect("the failed job is parked");
    let state = rabbit::job_state(&parked);
    assert_eq!(state.reason.as_deref(), Some("park"));
    assert!(state
        .last_error
        .unwrap_or_default()
        .contains("does not exist"));
    assert!(
        !state.history.is_empty(),
        "the attempt history travels with the job"
    );

    producer.close().await;
    worker.stop().await;
    dead_letter.stop().await;
    glance.delete_image(image.id).await.expect("delete image");
    rabbit::delete_queues(&topology.all_queues()).await;
}

/// Bodies no worker can use: each must be parked at once, kept as sent, with the field named.
fn poison_set() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let inner = |args: &str| -> Vec<u8> {
        let message = format!(
            r#"{{"method": "snapshot_instance", "args": {args}, "_unique_id": "53e413643f1445e4a93b284bb4bf83cb"}}"#
        );
        serde_json::to_vec(&serde_json::json!({"oslo.version": "2.0", "oslo.message": message}))
            .expect("json")
    };
    let image = r#""image_id": "0b5e7f3c-2222-4d5e-8f90-000000000002", "image_name": "x""#;
    vec![
        ("not json", b"{not json".to_vec(), "JSON"),
        ("no envelope", br#"{"method": "snapshot_instance"}"#.to_vec(), "oslo"),
        ("old envelope version", br#"{"oslo.version": "1.0", "oslo.message": "{}"}"#.to_vec(), "1.0"),
        ("missing disk", inner(r#"{}"#), "args.disk"),
        (
            "unknown method",
            br#"{"oslo.version": "2.0", "oslo.message": "{\"method\": \"drop_tables\", \"args\": {}}"}"#.to_vec(),
            "drop_tables",
        ),
        ("oversize body", vec![b' '; 70 * 1024], "limit"),
        ("slash in image", inner(&format!(r#"{{"disk": "vms/a/b", {image}}}"#)), "args.disk"),
        ("@ in image", inner(&format!(r#"{{"disk": "vms/a@b", {image}}}"#)), "args.disk"),
        ("control character", inner(&format!(r#"{{"disk": "vms/a\u0007b", {image}}}"#)), "args.disk"),
        ("over-long name", inner(&format!(r#"{{"disk": "vms/{}", {image}}}"#, "a".repeat(200))), "args.disk"),
        ("missing image id", inner(r#"{"disk": "vms/a", "image_name": "x"}"#), "args.image_id"),
    ]
}

#[tokio::test]
async fn poison_messages_are_parked_at_once_naming_the_problem() {
    let services = Services::from_env();
    let topology = test_topology("fallback-poison");
    let worker = RunningWorker::start_as(topology.clone(), "nova", Role::Work).await;
    let dead_letter = RunningWorker::start_as(topology.clone(), "nova", Role::DeadLetter).await;
    let (_connection, channel) = rabbit::channel().await;
    let poison = poison_set();
    for (_, body, _) in &poison {
        rabbit::publish_raw(&channel, &topology, body).await;
    }
    let mut parked = Vec::new();
    while parked.len() < poison.len() {
        let message = rabbit::get_one(&topology.parked_queue, Duration::from_secs(30))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "only {} of {} poison messages were parked",
                    parked.len(),
                    poison.len()
                )
            });
        parked.push(message);
    }
    for (what, body, mentions) in &poison {
        let message = parked
            .iter()
            .find(|m| &m.delivery.data == body)
            .unwrap_or_else(|| panic!("{what}: not parked as sent"));
        let state = rabbit::job_state(message);
        assert_eq!(state.reason.as_deref(), Some("malformed"), "{what}");
        let error = state.last_error.unwrap_or_default();
        assert!(
            error.contains(mentions),
            "{what}: '{error}' does not mention {mentions}"
        );
    }
    // The workers are still serving: a valid request for a missing disk is answered.
    let glance = glance_client(&services.glance_url);
    let missing = format!("{}_disk", Uuid::new_v4());
    let (image, producer, request) =
        snapshot_call(&glance, &topology, &missing, "fallback-poison").await;
    let reply = producer
        .call(request, Duration::from_secs(60))
        .await
        .expect("a reply");
    assert!(reply.failure.is_some());

    producer.close().await;
    worker.stop().await;
    dead_letter.stop().await;
    glance.delete_image(image.id).await.expect("delete image");
    rabbit::delete_queues(&topology.all_queues()).await;
}

#[tokio::test]
async fn glance_refusing_the_location_without_the_service_role_falls_back_to_a_full_copy() {
    let services = Services::from_env();
    let glance_url = snapq_tests::setting("SNAPQ_GLANCE_NO_SERVICE_URL");
    let cluster = cluster_as("nova").await;
    let vms = cluster.pool(&services.nova_pool).expect("nova pool");
    let disk = format!("{}_disk", Uuid::new_v4());
    make_disk(&vms, &disk, 64 * MIB, 4).await;

    let topology = test_topology("fallback-no-service");
    let worker =
        RunningWorker::start_with_glance(topology.clone(), "nova", Role::Work, &glance_url).await;
    let dead_letter =
        RunningWorker::start_with_glance(topology.clone(), "nova", Role::DeadLetter, &glance_url)
            .await;
    let glance = glance_client(&glance_url);
    let (image, producer, request) =
        snapshot_call(&glance, &topology, &disk, "fallback-no-service").await;
    let reply = producer
        .call(request, Duration::from_secs(120))
        .await
        .expect("a reply");
    assert!(reply.failure.is_none(), "{:?}", reply.failure);
    let result = reply.result.expect("a result");
    assert_eq!(result["method"], "fallback", "{result}");
    let history = result["history"].to_string();
    assert!(
        history.contains("publish_image"),
        "the fast path got as far as registering: {history}"
    );

    let record = glance.get_image(image.id).await.expect("image");
    assert_eq!(record.status, "active");
    let disk_spec = format!("{}/{disk}", services.nova_pool);
    assert_eq!(
        record.checksum.as_deref(),
        Some(md5_of(&disk_spec).as_str())
    );
    let (vms2, disk2) = (vms.clone(), disk.clone());
    let snaps = run_blocking(move || vms2.open_read_only(&disk2, None)?.snapshots())
        .await
        .expect("inspect the disk");
    assert!(snaps.is_empty(), "no snapshot left: {snaps:?}");

    producer.close().await;
    worker.stop().await;
    dead_letter.stop().await;
    glance.delete_image(image.id).await.expect("delete image");
    run_blocking(move || vms.remove_image(&disk))
        .await
        .expect("remove disk");
    rabbit::delete_queues(&topology.all_queues()).await;
}
