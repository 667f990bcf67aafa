//! A snapshot request through RabbitMQ, a worker, Ceph and Glance, checked the way the demo
//! checks it.

use std::time::Duration;

use snapq_common::glance::NewImage;
use snapq_common::message::{DiskSpec, SnapshotRequest};
use snapq_common::rbd::run_blocking;
use snapq_producer::Producer;
use snapq_tests::disks::{content_digest, leftovers, make_disk, MIB};
use snapq_tests::worker_harness::{glance_client, snapshot_call, test_topology, RunningWorker};
use snapq_tests::{cluster_as, rabbit, Services};
use uuid::Uuid;

const CALL_TIMEOUT: Duration = Duration::from_secs(180);

fn instance_disk_name() -> String {
    format!("{}_disk", Uuid::new_v4())
}

#[tokio::test]
async fn snapshot_request_makes_an_active_flattened_sparse_image() {
    let services = Services::from_env();
    let cluster = cluster_as("nova").await;
    let vms = cluster.pool(&services.nova_pool).expect("nova pool");
    let images = cluster.pool(&services.glance_pool).expect("glance pool");
    let disk = instance_disk_name();
    make_disk(&vms, &disk, 256 * MIB, 8).await;

    let worker = RunningWorker::start(test_topology("e2e-direct"), "nova").await;
    let glance = glance_client(&services.glance_url);
    let (image, producer, request) =
        snapshot_call(&glance, &worker.topology, &disk, "e2e-direct").await;
    let reply = producer.call(request, CALL_TIMEOUT).await.expect("a reply");
    assert!(reply.failure.is_none(), "job failed: {:?}", reply.failure);
    let result = reply.result.expect("a result");
    assert_eq!(result["method"], "direct");
    assert_eq!(result["status"], "active");

    let record = glance.get_image(image.id).await.expect("image");
    assert_eq!(record.status, "active");
    assert_eq!(record.size, Some(256 * MIB));
    let id = image.id.to_string();
    let location = format!(
        "rbd://{}/{}/{}/snap",
        cluster.fsid(),
        services.glance_pool,
        id
    );
    assert_eq!(record.direct_url.as_deref(), Some(location.as_str()));

    let (images2, vms2, id2, disk2) = (images.clone(), vms.clone(), id.clone(), disk.clone());
    let (parent, snap_protected, clone_used, source_used, source_snaps) = run_blocking(move || {
        let clone = images2.open_read_only(&id2, Some("snap"))?;
        let head = images2.open_read_only(&id2, None)?;
        let source = vms2.open_read_only(&disk2, None)?;
        Ok((
            head.parent()?,
            head.is_snap_protected("snap")?,
            clone.used_bytes()?,
            source.used_bytes()?,
            source.snapshots()?,
        ))
    })
    .await
    .expect("inspect Ceph");
    assert_eq!(
        parent, None,
        "the image no longer depends on the instance disk"
    );
    assert!(snap_protected, "Glance's snap is protected");
    assert_eq!(
        clone_used, source_used,
        "the image is as sparse as the disk"
    );
    assert_eq!(source_used, 8 * 4 * MIB);
    assert!(
        source_snaps.is_empty(),
        "no snapshot is left on the disk: {source_snaps:?}"
    );
    assert_eq!(
        content_digest(&images, &id, Some("snap")).await,
        content_digest(&vms, &disk, None).await,
        "the image holds the disk's data"
    );
    assert_eq!(rabbit::depth(&worker.topology.work_queue).await, 0);
    assert_eq!(rabbit::depth(&worker.topology.dead_letter_queue).await, 0);

    producer.close().await;
    let topology = worker.topology.clone();
    worker.stop().await;
    glance.delete_image(image.id).await.expect("delete image");
    let vms3 = vms.clone();
    run_blocking(move || vms3.remove_image(&disk))
        .await
        .expect("remove disk");
    rabbit::delete_queues(&topology.all_queues()).await;
}

#[tokio::test]
async fn malformed_request_is_dead_lettered_and_the_worker_keeps_working() {
    let services = Services::from_env();
    let worker = RunningWorker::start(test_topology("e2e-poison"), "nova").await;
    let topology = worker.topology.clone();
    let (_connection, channel) = rabbit::channel().await;
    let poison = br#"{"oslo.version": "2.0", "oslo.message": "{\"method\": \"snapshot_instance\", \"args\": {\"disk\": \"vms/a@b\"}}"}"#;
    rabbit::publish_raw(&channel, &topology, poison).await;
    let dead = rabbit::get_one(&topology.dead_letter_queue, Duration::from_secs(20))
        .await
        .expect("the malformed request reaches the dead-letter queue");
    assert_eq!(
        dead.delivery.data,
        poison.to_vec(),
        "the message is kept as sent"
    );

    // The worker survived and still serves requests: a request for a disk that does not
    // exist is answered with a failure naming the disk.
    let glance = glance_client(&services.glance_url);
    let missing = format!("{}_disk", Uuid::new_v4());
    let (image, producer, request) =
        snapshot_call(&glance, &topology, &missing, "e2e-missing").await;
    let reply = producer.call(request, CALL_TIMEOUT).await.expect("a reply");
    let failure = reply.failure.expect("the job fails");
    assert!(failure.message.contains(&missing), "{}", failure.message);
    assert!(
        rabbit::get_one(&topology.dead_letter_queue, Duration::from_secs(20))
            .await
            .is_some()
    );

    producer.close().await;
    worker.stop().await;
    glance.delete_image(image.id).await.expect("delete image");
    rabbit::delete_queues(&topology.all_queues()).await;
}

#[tokio::test]
async fn read_only_images_pool_dead_letters_the_job_and_leaves_nothing() {
    let services = Services::from_env();
    let cluster = cluster_as("nova").await;
    let vms = cluster.pool(&services.nova_pool).expect("nova pool");
    let images = cluster.pool(&services.glance_pool).expect("glance pool");
    let disk = instance_disk_name();
    make_disk(&vms, &disk, 64 * MIB, 2).await;

    let worker = RunningWorker::start(test_topology("e2e-eperm"), "nova-ro").await;
    let topology = worker.topology.clone();
    let glance = glance_client(&services.glance_url);
    let (image, producer, request) = snapshot_call(&glance, &topology, &disk, "e2e-eperm").await;
    // A job bound for the full-copy fallback is answered by the dead-letter consumer (none
    // runs here), so cast and look at the dead-letter queue.
    producer.cast(&request).await.expect("publish");
    let dead = rabbit::get_one(&topology.dead_letter_queue, Duration::from_secs(30))
        .await
        .expect("the job waits in the dead-letter queue for the full-copy fallback");
    let state = rabbit::job_state(&dead);
    assert_eq!(state.reason.as_deref(), Some("fallback"));
    let cause = state.last_error.unwrap_or_default();
    assert!(cause.contains("permission denied"), "{cause}");

    let (clone_exists, source_snaps) = leftovers(&images, &vms, image.id, &disk).await;
    assert!(!clone_exists, "no clone is left in the images pool");
    assert!(
        source_snaps.is_empty(),
        "the source snapshot was removed: {source_snaps:?}"
    );

    producer.close().await;
    worker.stop().await;
    glance.delete_image(image.id).await.expect("delete image");
    run_blocking(move || vms.remove_image(&disk))
        .await
        .expect("remove disk");
    rabbit::delete_queues(&topology.all_queues()).await;
}

#[tokio::test]
async fn image_not_expecting_raw_data_is_dead_lettered_untouched() {
    let services = Services::from_env();
    let cluster = cluster_as("nova").await;
    let vms = cluster.pool(&services.nova_pool).expect("nova pool");
    let images = cluster.pool(&services.glance_pool).expect("glance pool");
    let disk = instance_disk_name();
    make_disk(&vms, &disk, 64 * MIB, 2).await;

    let worker = RunningWorker::start(test_topology("e2e-qcow2"), "nova").await;
    let topology = worker.topology.clone();
    let glance = glance_client(&services.glance_url);
    let mut new_image = NewImage::raw("e2e-qcow2");
    new_image.disk_format = "qcow2".into();
    let image = glance.create_image(&new_image).await.expect("image");
    let producer = Producer::connect(&services.amqp_url, topology.clone())
        .await
        .expect("producer");
    let request = SnapshotRequest::new(
        DiskSpec::new(services.nova_pool.clone(), disk.clone()).expect("valid disk"),
        image.id,
        "e2e-qcow2".into(),
    );
    let reply = producer.call(request, CALL_TIMEOUT).await.expect("a reply");
    let failure = reply
        .failure
        .expect("a qcow2 image cannot take an RBD clone");
    assert!(failure.message.contains("qcow2"), "{}", failure.message);
    assert_eq!(failure.class, "SnapshotRefused", "{failure:?}");
    let dead = rabbit::get_one(&topology.dead_letter_queue, Duration::from_secs(20))
        .await
        .expect("the job waits in the dead-letter queue");
    let state = rabbit::job_state(&dead);
    assert_eq!(state.reason.as_deref(), Some("refused"));

    let (clone_exists, source_snaps) = leftovers(&images, &vms, image.id, &disk).await;
    assert!(!clone_exists, "nothing was cloned");
    assert!(
        source_snaps.is_empty(),
        "nothing was snapshotted: {source_snaps:?}"
    );

    producer.close().await;
    worker.stop().await;
    glance.delete_image(image.id).await.expect("delete image");
    run_blocking(move || vms.remove_image(&disk))
        .await
        .expect("remove disk");
    rabbit::delete_queues(&topology.all_queues()).await;
}
