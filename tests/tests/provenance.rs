//! snapq touches only what it made: a request naming a Glance image that is not waiting for
//! it, an image made for another disk, an RBD image snapq did not make, or a disk outside the
//! allowed pools and names is refused, and everything it names stays exactly as it was
//! (Glance's record and the RBD data compared before and after).

use std::time::Duration;

use serde_json::Value;
use snapq_common::glance::{GlanceClient, ImageRecord, NewImage};
use snapq_common::message::{DiskSpec, RpcFailure, SnapshotRequest};
use snapq_common::rbd::{run_blocking, Pool};
use snapq_producer::Producer;
use snapq_tests::disks::{content_digest, make_disk, MIB};
use snapq_tests::worker_harness::{glance_client, test_topology, RunningWorker};
use snapq_tests::{cluster_as, pattern, rabbit, setting, Services};
use uuid::Uuid;

const CALL_TIMEOUT: Duration = Duration::from_secs(120);

fn instance_disk_name() -> String {
    format!("{}_disk", Uuid::new_v4())
}

/// Everything the test compares: Glance's whole image record and the RBD data behind it.
#[derive(Debug, PartialEq)]
struct ImageSnapshot {
    record: Value,
    rbd_digest: Option<u64>,
    rbd_snapshots: Vec<String>,
}

async fn glance_record(image_id: Uuid) -> Value {
    let url = format!("{}/v2/images/{image_id}", setting("SNAPQ_GLANCE_URL"));
    reqwest::get(&url)
        .await
        .expect("GET the image")
        .json()
        .await
        .expect("an image document")
}

async fn observe(images: &Pool, image_id: Uuid) -> ImageSnapshot {
    let name = image_id.to_string();
    let (pool, name2) = (images.clone(), name.clone());
    let exists = run_blocking(move || pool.image_exists(&name2))
        .await
        .expect("look in the images pool");
    let (rbd_digest, rbd_snapshots) = if exists {
        let (pool, name2) = (images.clone(), name.clone());
        let snaps = run_blocking(move || pool.open_read_only(&name2, None)?.snapshots())
            .await
            .expect("list snapshots");
        (
            Some(content_digest(images, &name, None).await),
            snaps.into_iter().map(|s| s.name).collect(),
        )
    } else {
        (None, Vec::new())
    };
    ImageSnapshot {
        record: glance_record(image_id).await,
        rbd_digest,
        rbd_snapshots,
    }
}

async fn wait_hashed(glance: &GlanceClient, image_id: Uuid) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while glance
        .get_image(image_id)
        .await
        .expect("image")
        .os_hash_value
        .is_none()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Glance never hashed the image"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn uploaded_image(glance: &GlanceClient, name: &str, data: Vec<u8>) -> ImageRecord {
    let image = glance
        .create_image(&NewImage::raw(name))
        .await
        .expect("an image");
    let size = data.len() as u64;
    glance
        .upload(image.id, reqwest::Body::from(data), Some(size))
        .await
        .expect("upload");
    glance
        .wait_active(
            image.id,
            Duration::from_secs(60),
            Duration::from_millis(100),
        )
        .await
        .expect("uploaded image active")
}

async fn disk_snapshots(vms: &Pool, disk: &str) -> Vec<String> {
    let (vms, disk) = (vms.clone(), disk.to_string());
    run_blocking(move || vms.open_read_only(&disk, None)?.snapshots())
        .await
        .expect("list the disk's snapshots")
        .into_iter()
        .map(|s| s.name)
        .collect()
}

async fn remove_disk(vms: &Pool, disk: &str) {
    let (vms, disk) = (vms.clone(), disk.to_string());
    run_blocking(move || vms.remove_image(&disk))
        .await
        .expect("remove the test disk");
}

fn request_for(pool: &str, disk: &str, image_id: Uuid) -> SnapshotRequest {
    SnapshotRequest::new(
        DiskSpec::new(pool.to_string(), disk.to_string()).expect("valid disk"),
        image_id,
        "provenance".into(),
    )
}

/// Calls and expects a `SnapshotRefused` failure.
async fn refused(producer: &Producer, request: SnapshotRequest) -> RpcFailure {
    let reply = producer.call(request, CALL_TIMEOUT).await.expect("a reply");
    let failure = reply
        .failure
        .unwrap_or_else(|| panic!("expected a refusal, got {:?}", reply.result));
    assert_eq!(failure.class, "SnapshotRefused", "{failure:?}");
    assert_eq!(failure.module, "snapq.exceptions", "{failure:?}");
    failure
}

/// The parked reason of the job the work queue dead-lettered.
async fn dead_letter_reason(worker: &RunningWorker) -> Option<String> {
    let dead = rabbit::get_one(&worker.topology.dead_letter_queue, Duration::from_secs(20))
        .await
        .expect("the refused job was dead-lettered");
    rabbit::job_state(&dead).reason
}

struct Fixture {
    services: Services,
    vms: Pool,
    images: Pool,
    glance: GlanceClient,
    worker: RunningWorker,
    producer: Producer,
}

impl Fixture {
    async fn new(prefix: &str) -> Fixture {
        let services = Services::from_env();
        let cluster = cluster_as("nova").await;
        let vms = cluster.pool(&services.nova_pool).expect("nova pool");
        let images = cluster.pool(&services.glance_pool).expect("glance pool");
        let worker = RunningWorker::start(test_topology(prefix), "nova").await;
        let producer = Producer::connect(&services.amqp_url, worker.topology.clone())
            .await
            .expect("producer");
        let glance = glance_client(&services.glance_url);
        Fixture {
            services,
            vms,
            images,
            glance,
            worker,
            producer,
        }
    }

    async fn disk(&self) -> String {
        let disk = instance_disk_name();
        make_disk(&self.vms, &disk, 64 * MIB, 2).await;
        disk
    }

    async fn finish(self) {
        self.producer.close().await;
        let queues: Vec<String> = self
            .worker
            .topology
            .all_queues()
            .into_iter()
            .map(str::to_string)
            .collect();
        self.worker.stop().await;
        let queues: Vec<&str> = queues.iter().map(String::as_str).collect();
        rabbit::delete_queues(&queues).await;
    }
}

#[tokio::test]
async fn active_image_uploaded_by_someone_else_is_refused_and_left_as_it_was() {
    let f = Fixture::new("prov-active").await;
    let disk = f.disk().await;
    let image = uploaded_image(&f.glance, "prov-active", pattern(11, 4 << 20)).await;
    let before = observe(&f.images, image.id).await;
    assert!(
        before.rbd_digest.is_some(),
        "Glance stored the upload in RBD"
    );

    let failure = refused(
        &f.producer,
        request_for(&f.services.nova_pool, &disk, image.id),
    )
    .await;
    assert!(failure.message.contains("'active'"), "{}", failure.message);
    assert_eq!(
        dead_letter_reason(&f.worker).await.as_deref(),
        Some("refused")
    );
    assert_eq!(observe(&f.images, image.id).await, before);
    assert!(disk_snapshots(&f.vms, &disk).await.is_empty());

    f.glance.delete_image(image.id).await.expect("delete image");
    remove_disk(&f.vms, &disk).await;
    f.finish().await;
}

#[tokio::test]
async fn deactivated_image_is_refused_and_its_data_stays() {
    let f = Fixture::new("prov-deact").await;
    let disk = f.disk().await;
    let image = uploaded_image(&f.glance, "prov-deactivated", pattern(12, 4 << 20)).await;
    let url = format!(
        "{}/v2/images/{}/actions/deactivate",
        f.services.glance_url, image.id
    );
    let status = reqwest::Client::new()
        .post(&url)
        .send()
        .await
        .expect("deactivate")
        .status();
    assert!(status.is_success(), "deactivate: {status}");
    let before = observe(&f.images, image.id).await;
    assert_eq!(before.record["status"], "deactivated");
    assert!(before.rbd_digest.is_some());

    let failure = refused(
        &f.producer,
        request_for(&f.services.nova_pool, &disk, image.id),
    )
    .await;
    assert!(
        failure.message.contains("refusing to touch it"),
        "{}",
        failure.message
    );
    assert_eq!(
        dead_letter_reason(&f.worker).await.as_deref(),
        Some("refused")
    );
    assert_eq!(observe(&f.images, image.id).await, before);
    assert!(disk_snapshots(&f.vms, &disk).await.is_empty());

    let reactivate = format!(
        "{}/v2/images/{}/actions/reactivate",
        f.services.glance_url, image.id
    );
    let _ = reqwest::Client::new().post(&reactivate).send().await;
    f.glance.delete_image(image.id).await.expect("delete image");
    remove_disk(&f.vms, &disk).await;
    f.finish().await;
}

#[tokio::test]
async fn image_glance_is_still_writing_is_refused_and_its_upload_completes() {
    let f = Fixture::new("prov-saving").await;
    let disk = f.disk().await;
    let image = f
        .glance
        .create_image(&NewImage::raw("prov-saving"))
        .await
        .expect("image");
    let data = pattern(13, 8 << 20);
    let (tx, rx) = futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(rx);
    let (glance, id, size) = (f.glance.clone(), image.id, data.len() as u64);
    let upload = tokio::spawn(async move { glance.upload(id, body, Some(size)).await });
    let mut tx = tx;
    futures::SinkExt::send(&mut tx, Ok(data[..4 << 20].to_vec()))
        .await
        .expect("first half");
    // Glance is now writing the image: `saving`.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let record = f.glance.get_image(image.id).await.expect("image");
        if record.status == "saving" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upload never made the image saving: {}",
            record.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let failure = refused(
        &f.producer,
        request_for(&f.services.nova_pool, &disk, image.id),
    )
    .await;
    assert!(failure.message.contains("refusing"), "{}", failure.message);
    assert!(disk_snapshots(&f.vms, &disk).await.is_empty());

    futures::SinkExt::send(&mut tx, Ok(data[4 << 20..].to_vec()))
        .await
        .expect("second half");
    drop(tx);
    upload
        .await
        .expect("upload task")
        .expect("the upload completes");
    let active = f
        .glance
        .wait_active(
            image.id,
            Duration::from_secs(60),
            Duration::from_millis(100),
        )
        .await
        .expect("the uploaded image becomes active");
    assert_eq!(active.size, Some(size));
    // The bytes Glance stored are the uploaded ones, not the disk's.
    let images = f.images.clone();
    let scratch = format!("prov-saving-ref-{}", Uuid::new_v4().simple());
    let (pool, name, bytes) = (images.clone(), scratch.clone(), data.clone());
    run_blocking(move || {
        pool.create_image(&name, bytes.len() as u64)?;
        let mut image = pool.open(&name)?;
        image.write_at(0, &bytes)?;
        image.flush()
    })
    .await
    .expect("reference image");
    assert_eq!(
        content_digest(&images, &image.id.to_string(), None).await,
        content_digest(&images, &scratch, None).await,
        "Glance's image holds exactly the uploaded data"
    );
    let (pool, name) = (images.clone(), scratch.clone());
    run_blocking(move || pool.remove_image(&name))
        .await
        .expect("remove reference");

    f.glance.delete_image(image.id).await.expect("delete image");
    remove_disk(&f.vms, &disk).await;
    f.finish().await;
}

#[tokio::test]
async fn image_made_from_another_disk_is_refused_and_a_duplicate_of_the_same_job_converges() {
    let f = Fixture::new("prov-other-disk").await;
    let (first, second) = (f.disk().await, f.disk().await);
    let image = f
        .glance
        .create_image(&NewImage::raw("prov-other-disk"))
        .await
        .expect("image");
    let reply = f
        .producer
        .call(
            request_for(&f.services.nova_pool, &first, image.id),
            CALL_TIMEOUT,
        )
        .await
        .expect("a reply");
    assert!(reply.failure.is_none(), "{:?}", reply.failure);
    // Glance hashes a location image in the background; wait so that only snapq could
    // change the record from here on.
    wait_hashed(&f.glance, image.id).await;
    let before = observe(&f.images, image.id).await;
    assert_eq!(before.record["status"], "active");

    let failure = refused(
        &f.producer,
        request_for(&f.services.nova_pool, &second, image.id),
    )
    .await;
    assert!(
        failure.message.contains(&first) && failure.message.contains(&second),
        "the refusal names both disks: {}",
        failure.message
    );
    assert_eq!(
        dead_letter_reason(&f.worker).await.as_deref(),
        Some("refused")
    );
    assert_eq!(observe(&f.images, image.id).await, before);
    assert!(disk_snapshots(&f.vms, &second).await.is_empty());

    // The same job sent again (same image, same disk) converges on the same image.
    let again = f
        .producer
        .call(
            request_for(&f.services.nova_pool, &first, image.id),
            CALL_TIMEOUT,
        )
        .await
        .expect("a reply");
    assert!(again.failure.is_none(), "{:?}", again.failure);
    assert_eq!(
        again.result.as_ref().map(|r| r["status"].clone()),
        Some(Value::from("active"))
    );
    assert_eq!(observe(&f.images, image.id).await, before);
    assert!(disk_snapshots(&f.vms, &first).await.is_empty());

    f.glance.delete_image(image.id).await.expect("delete image");
    remove_disk(&f.vms, &first).await;
    remove_disk(&f.vms, &second).await;
    f.finish().await;
}

#[tokio::test]
async fn request_for_an_image_another_job_is_making_is_refused_without_disturbing_it() {
    let f = Fixture::new("prov-in-flight").await;
    let first = instance_disk_name();
    // Big enough that the first job is still at work when the second arrives.
    make_disk(&f.vms, &first, 1024 * MIB, 64).await;
    let second = f.disk().await;
    let image = f
        .glance
        .create_image(&NewImage::raw("prov-in-flight"))
        .await
        .expect("image");
    let producer = Producer::connect(&f.services.amqp_url, f.worker.topology.clone())
        .await
        .expect("second producer");
    let first_request = request_for(&f.services.nova_pool, &first, image.id);
    let first_call = tokio::spawn(async move { producer.call(first_request, CALL_TIMEOUT).await });
    // Wait until the first job's clone exists.
    let (images, name) = (f.images.clone(), image.id.to_string());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (pool, n) = (images.clone(), name.clone());
        if run_blocking(move || pool.image_exists(&n))
            .await
            .expect("look")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first job never cloned"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let failure = refused(
        &f.producer,
        request_for(&f.services.nova_pool, &second, image.id),
    )
    .await;
    assert!(failure.message.contains(&first), "{}", failure.message);
    let reply = first_call
        .await
        .expect("first call task")
        .expect("a reply to the first job");
    assert!(
        reply.failure.is_none(),
        "the first job was disturbed: {:?}",
        reply.failure
    );
    let record = f.glance.get_image(image.id).await.expect("image");
    assert_eq!(record.status, "active");
    assert_eq!(
        content_digest(&f.images, &name, None).await,
        content_digest(&f.vms, &first, None).await,
        "the image holds the first disk's data"
    );
    assert!(disk_snapshots(&f.vms, &second).await.is_empty());
    assert!(disk_snapshots(&f.vms, &first).await.is_empty());

    f.glance.delete_image(image.id).await.expect("delete image");
    remove_disk(&f.vms, &first).await;
    remove_disk(&f.vms, &second).await;
    f.finish().await;
}

#[tokio::test]
async fn rbd_image_snapq_did_not_make_under_the_image_name_is_refused_and_kept() {
    let f = Fixture::new("prov-unmarked").await;
    let disk = f.disk().await;
    let image = f
        .glance
        .create_image(&NewImage::raw("prov-unmarked"))
        .await
        .expect("image");
    // Somebody's RBD image that happens to carry the Glance image's id.
    let (pool, name) = (f.images.clone(), image.id.to_string());
    run_blocking(move || {
        pool.create_image(&name, 8 * MIB)?;
        let mut other = pool.open(&name)?;
        other.write_at(0, &pattern(14, MIB as usize))?;
        other.flush()
    })
    .await
    .expect("foreign image");
    let before = observe(&f.images, image.id).await;

    let failure = refused(
        &f.producer,
        request_for(&f.services.nova_pool, &disk, image.id),
    )
    .await;
    assert!(
        failure.message.contains("carries no snapq mark"),
        "{}",
        failure.message
    );
    assert_eq!(
        dead_letter_reason(&f.worker).await.as_deref(),
        Some("refused")
    );
    assert_eq!(observe(&f.images, image.id).await, before);
    assert!(disk_snapshots(&f.vms, &disk).await.is_empty());

    let (pool, name) = (f.images.clone(), image.id.to_string());
    run_blocking(move || pool.remove_image(&name))
        .await
        .expect("remove foreign image");
    f.glance.delete_image(image.id).await.expect("delete image");
    remove_disk(&f.vms, &disk).await;
    f.finish().await;
}

/// Whether `pool` holds RADOS object `object` (through the `rados` CLI, as Nova's user).
async fn object_exists(pool: &str, object: &str) -> bool {
    let out = tokio::process::Command::new("rados")
        .args([
            "-c",
            &setting("SNAPQ_CEPH_CONF"),
            "--id",
            "nova",
            "-p",
            pool,
        ])
        .args(["stat", object])
        .output()
        .await
        .expect("run rados stat");
    out.status.success()
}

#[tokio::test]
async fn disks_outside_the_allowed_pools_and_names_and_other_projects_images_are_refused_with_nothing_created(
) {
    let f = Fixture::new("prov-policy").await;
    // Real images under names a request must not reach: a Glance-pool image and a disk whose
    // name is not an instance disk's.
    let in_glance_pool = instance_disk_name();
    make_disk(&f.images, &in_glance_pool, 8 * MIB, 1).await;
    let volume = format!("volume-{}", Uuid::new_v4());
    make_disk(&f.vms, &volume, 8 * MIB, 1).await;
    let disk = f.disk().await;

    let cases = [
        (
            request_for(&f.services.glance_pool, &in_glance_pool, Uuid::nil()),
            "Glance's pool",
        ),
        (
            request_for(&f.services.nova_pool, &volume, Uuid::nil()),
            "allowed disk names",
        ),
        (
            request_for(&f.services.nova_pool, &disk, Uuid::nil()),
            "project",
        ),
    ];
    for (mut request, expected) in cases {
        let image = f
            .glance
            .create_image(&NewImage::raw("prov-policy"))
            .await
            .expect("image");
        request.image_id = image.id;
        if expected == "project" {
            request
                .context
                .insert("project_id", Value::from("someone-elses-project"));
        }
        let failure = refused(&f.producer, request).await;
        assert!(failure.message.contains(expected), "{}", failure.message);
        assert_eq!(
            dead_letter_reason(&f.worker).await.as_deref(),
            Some("refused")
        );
        let record = f.glance.get_image(image.id).await.expect("image");
        assert_eq!(record.status, "queued", "{expected}");
        let (pool, name) = (f.images.clone(), image.id.to_string());
        assert!(
            !run_blocking(move || pool.image_exists(&name))
                .await
                .expect("look"),
            "{expected}: nothing cloned"
        );
        assert!(
            !object_exists(&f.services.nova_pool, &format!("snapq_lease.{}", image.id)).await,
            "{expected}: no lease object"
        );
        f.glance.delete_image(image.id).await.expect("delete image");
    }
    assert!(disk_snapshots(&f.images, &in_glance_pool).await.is_empty());
    assert!(disk_snapshots(&f.vms, &volume).await.is_empty());
    assert!(disk_snapshots(&f.vms, &disk).await.is_empty());

    remove_disk(&f.images, &in_glance_pool).await;
    remove_disk(&f.vms, &volume).await;
    remove_disk(&f.vms, &disk).await;
    f.finish().await;
}

#[tokio::test]
async fn a_request_in_the_images_own_project_is_served() {
    let f = Fixture::new("prov-own-project").await;
    let disk = f.disk().await;
    let image = f
        .glance
        .create_image(&NewImage::raw("prov-own-project"))
        .await
        .expect("image");
    let owner = image.owner.clone().expect("Glance names the image's owner");
    let mut request = request_for(&f.services.nova_pool, &disk, image.id);
    request.context.insert("project_id", Value::from(owner));
    let reply = f
        .producer
        .call(request, CALL_TIMEOUT)
        .await
        .expect("a reply");
    assert!(reply.failure.is_none(), "{:?}", reply.failure);
    f.glance.delete_image(image.id).await.expect("delete image");
    remove_disk(&f.vms, &disk).await;
    f.finish().await;
}

/// The value of xattr `name` on the lease object of `image_id` in `pool`, if any.
async fn lease_xattr(pool: &Pool, image_id: Uuid, name: &str) -> Option<String> {
    let (pool, object, name) = (
        pool.clone(),
        snapq_worker::lease::lease_object(image_id),
        name.to_string(),
    );
    run_blocking(move || pool.xattr(&object, &name))
        .await
        .expect("read the lease object's xattr")
        .map(|raw| String::from_utf8_lossy(&raw).into_owned())
}

/// Publishes `request` to the dead-letter queue as a job sent to the full copy, the way a
/// replay (`snapq jobs replay --fallback`) or anyone on the bus can.
async fn publish_for_full_copy(topology: &snapq_common::amqp::Topology, request: &SnapshotRequest) {
    let (_connection, channel) = rabbit::channel().await;
    let state = snapq_common::job::JobState {
        reason: Some("fallback".into()),
        ..snapq_common::job::JobState::fresh()
    };
    snapq_common::amqp::publish_confirmed(
        &channel,
        &topology.dead_letter_exchange,
        &topology.dead_letter_routing_key,
        &request.encode(),
        snapq_common::amqp::oslo_properties().with_headers(state.to_headers()),
    )
    .await
    .expect("publish to the dead-letter exchange");
}

/// The race window of two disks for one image: a job has claimed the image (between two of
/// its steps, its lease object holds the claim and its progress, the lock is free) when a
/// request for the same image from another disk comes, to the work queue and as a full copy
/// to the dead-letter queue. Both are refused, the `call` at once, and neither disturbs the
/// first job: its claim, progress and snapshot stay, and it then completes with its disk's
/// data.
#[tokio::test]
async fn a_claim_by_another_disk_is_refused_on_both_queues_and_the_first_job_completes() {
    let f = Fixture::new("prov-claim").await;
    let dead_letter = RunningWorker::start_as(
        f.worker.topology.clone(),
        "nova",
        snapq_worker::Role::DeadLetter,
    )
    .await;
    let (first, second) = (f.disk().await, f.disk().await);
    let image = f
        .glance
        .create_image(&NewImage::raw("prov-claim"))
        .await
        .expect("image");
    let first_spec = format!("{}/{first}", f.services.nova_pool);
    // The first job took the lease, claimed the image and made its snapshot; its next step
    // waits in a queue.
    let lease = snapq_worker::lease::JobLease::acquire(
        &f.vms,
        image.id,
        ("first-job", &first_spec),
        "provenance-test",
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|e| panic!("take the first job's lease: {e:?}"));
    assert_eq!(
        lease.claim().await.expect("claim"),
        snapq_worker::lease::Claim::Ours
    );
    let (vms, disk, snap) = (f.vms.clone(), first.clone(), format!("snapq-{}", image.id));
    run_blocking(move || vms.open(&disk)?.create_snap(&snap))
        .await
        .expect("the first job's snapshot");
    lease
        .release(snapq_worker::lease::Release::After(
            snapq_common::job::Step::SnapshotSource,
        ))
        .await;
    let claim_before = lease_xattr(&f.vms, image.id, "snapq.claim").await;
    let progress_before = lease_xattr(&f.vms, image.id, "snapq.progress").await;
    assert_eq!(claim_before.as_deref(), Some(first_spec.as_str()));
    assert!(progress_before.is_some());

    let failure = refused(
        &f.producer,
        request_for(&f.services.nova_pool, &second, image.id),
    )
    .await;
    assert!(
        failure.message.contains(&first_spec) && failure.message.contains("another snapq job"),
        "{}",
        failure.message
    );
    let parked = rabbit::get_one(&f.worker.topology.parked_queue, Duration::from_secs(30))
        .await
        .expect("the refused call's job was parked");
    assert_eq!(
        rabbit::job_state(&parked).reason.as_deref(),
        Some("refused")
    );
    publish_for_full_copy(
        &f.worker.topology,
        &request_for(&f.services.nova_pool, &second, image.id),
    )
    .await;
    let parked = rabbit::get_one(&f.worker.topology.parked_queue, Duration::from_secs(30))
        .await
        .expect("the full copy for the other disk was parked");
    let state = rabbit::job_state(&parked);
    assert_eq!(state.reason.as_deref(), Some("refused"));
    assert!(
        state
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("another snapq job")),
        "{:?}",
        state.last_error
    );
    assert_eq!(
        lease_xattr(&f.vms, image.id, "snapq.claim").await,
        claim_before
    );
    assert_eq!(
        lease_xattr(&f.vms, image.id, "snapq.progress").await,
        progress_before
    );
    assert_eq!(
        disk_snapshots(&f.vms, &first).await,
        vec![format!("snapq-{}", image.id)]
    );
    assert!(disk_snapshots(&f.vms, &second).await.is_empty());
    let record = f.glance.get_image(image.id).await.expect("image");
    assert_eq!(record.status, "queued");

    // The first job (its disk) goes on and completes.
    let reply = f
        .producer
        .call(
            request_for(&f.services.nova_pool, &first, image.id),
            CALL_TIMEOUT,
        )
        .await
        .expect("a reply");
    assert!(reply.failure.is_none(), "{:?}", reply.failure);
    assert_eq!(
        content_digest(&f.images, &image.id.to_string(), None).await,
        content_digest(&f.vms, &first, None).await,
        "the image holds the first disk's data"
    );
    assert!(
        !object_exists(
            &f.services.nova_pool,
            &snapq_worker::lease::lease_object(image.id)
        )
        .await,
        "the finished job removed its lease object"
    );

    dead_letter.stop().await;
    f.glance.delete_image(image.id).await.expect("delete image");
    remove_disk(&f.vms, &first).await;
    remove_disk(&f.vms, &second).await;
    f.finish().await;
}

/// A full copy asked for another project's image, for the very disk a live job is making it
/// from (so its names and marks are the live job's): refused before any cleanup, so the live
/// job's snapshot stays, and no lease object is left.
#[tokio::test]
async fn a_full_copy_for_another_projects_image_cleans_up_nothing() {
    let f = Fixture::new("prov-dl-project").await;
    let dead_letter = RunningWorker::start_as(
        f.worker.topology.clone(),
        "nova",
        snapq_worker::Role::DeadLetter,
    )
    .await;
    let disk = f.disk().await;
    let image = f
        .glance
        .create_image(&NewImage::raw("prov-dl-project"))
        .await
        .expect("image");
    // The live job's snapshot, marked by its name for this image.
    let (vms, d, snap) = (f.vms.clone(), disk.clone(), format!("snapq-{}", image.id));
    run_blocking(move || vms.open(&d)?.create_snap(&snap))
        .await
        .expect("the live job's snapshot");
    let mut request = request_for(&f.services.nova_pool, &disk, image.id);
    request
        .context
        .insert("project_id", Value::from("someone-elses-project"));
    publish_for_full_copy(&f.worker.topology, &request).await;
    let parked = rabbit::get_one(&f.worker.topology.parked_queue, Duration::from_secs(30))
        .await
        .expect("the refused full copy was parked");
    let state = rabbit::job_state(&parked);
    assert_eq!(state.reason.as_deref(), Some("refused"));
    assert!(
        state
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("not owned by the request's project")),
        "{:?}",
        state.last_error
    );
    assert_eq!(
        disk_snapshots(&f.vms, &disk).await,
        vec![format!("snapq-{}", image.id)],
        "the live job's snapshot was left alone"
    );
    assert!(
        !object_exists(
            &f.services.nova_pool,
            &snapq_worker::lease::lease_object(image.id)
        )
        .await,
        "no lease object"
    );
    assert_eq!(
        f.glance.get_image(image.id).await.expect("image").status,
        "queued"
    );

    dead_letter.stop().await;
    let (vms, d, snap) = (f.vms.clone(), disk.clone(), format!("snapq-{}", image.id));
    run_blocking(move || vms.open(&d)?.remove_snap(&snap))
        .await
        .expect("remove the snapshot");
    f.glance.delete_image(image.id).await.expect("delete image");
    remove_disk(&f.vms, &disk).await;
    f.finish().await;
}
