//! `snapq jobs purge`: a parked job goes for good, and with it only what snapq made for it.
//! Its marked artefacts (the source snapshot, the marked clone, the full-copy snapshot) are
//! removed; everything else under the same names or on the same disk stays byte for byte
//! (checksums before and after); a purge is refused while another job of the image is under
//! way, and touches nothing in Ceph for a request the source policy forbids.

use std::process::Command;
use std::time::Duration;

use snapq_common::amqp::{oslo_properties, publish_confirmed, Topology};
use snapq_common::glance::{GlanceClient, NewImage};
use snapq_common::job::{JobState, Step};
use snapq_common::message::{DiskSpec, SnapshotRequest};
use snapq_common::rbd::{run_blocking, Pool};
use snapq_tests::disks::{content_digest, make_disk, MIB};
use snapq_tests::worker_harness::{glance_client, test_topology, RunningWorker};
use snapq_tests::{cluster_as, rabbit, Services};
use snapq_worker::lease::{lease_object, Claim, JobLease, Release};
use uuid::Uuid;

fn instance_disk_name() -> String {
    format!("{}_disk", Uuid::new_v4())
}

/// Puts a parked job for `request` in the parking lot, as the dead-letter consumer does.
async fn park(topology: &Topology, request: &SnapshotRequest) {
    let (_connection, channel) = rabbit::channel().await;
    let mut state = JobState {
        job_id: Some(request.unique_id.clone()),
        last_error: Some("parked by the purge test".into()),
        ..JobState::fresh()
    };
    state.set_reason(snapq_common::job::DeadLetterReason::Park);
    publish_confirmed(
        &channel,
        "",
        &topology.parked_queue,
        &request.encode(),
        oslo_properties().with_headers(state.to_headers()),
    )
    .await
    .expect("park the job");
}

/// Runs `snapq jobs purge <id>`; returns (success, stdout + stderr).
fn purge(services: &Services, topology: &Topology, id: &str) -> (bool, String) {
    let output = Command::new(snapq_tests::worker_process::binary("snapq"))
        .args(["jobs", "purge", id])
        .env("SNAPQ_AMQP_URL", &services.amqp_url)
        .env("SNAPQ_TOPIC", &topology.config.topic)
        .env(
            "SNAPQ_DELIVERY_LIMIT",
            topology.config.delivery_limit.to_string(),
        )
        .env("SNAPQ_CEPH_CONF", &services.ceph_conf)
        .env("SNAPQ_CEPH_USER", "nova")
        .env("SNAPQ_GLANCE_URL", &services.glance_url)
        .env("SNAPQ_GLANCE_POOL", &services.glance_pool)
        .env("SNAPQ_LEASE_POOL", &services.nova_pool)
        .env("SNAPQ_SOURCE_POOLS", &services.nova_pool)
        .output()
        .expect("run snapq jobs purge");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

async fn snapshots(pool: &Pool, image: &str) -> Vec<String> {
    let (pool, image) = (pool.clone(), image.to_string());
    let mut names: Vec<String> =
        run_blocking(move || pool.open_read_only(&image, None)?.snapshots())
            .await
            .expect("list snapshots")
            .into_iter()
            .map(|s| s.name)
            .collect();
    names.sort();
    names
}

async fn snapshot(pool: &Pool, image: &str, snap: &str) {
    let (pool, image, snap) = (pool.clone(), image.to_string(), snap.to_string());
    run_blocking(move || pool.open(&image)?.create_snap(&snap))
        .await
        .expect("make a snapshot");
}

async fn exists(pool: &Pool, image: &str) -> bool {
    let (pool, image) = (pool.clone(), image.to_string());
    run_blocking(move || pool.image_exists(&image))
        .await
        .expect("look for an image")
}

fn request(pool: &str, disk: &str, image_id: Uuid) -> SnapshotRequest {
    SnapshotRequest::new(
        DiskSpec::new(pool.to_string(), disk.to_string()).expect("valid disk"),
        image_id,
        "purge-test".into(),
    )
}

struct Fixture {
    services: Services,
    vms: Pool,
    images: Pool,
    glance: GlanceClient,
    worker: RunningWorker,
}

impl Fixture {
    async fn new(prefix: &str) -> Fixture {
        let services = Services::from_env();
        let cluster = cluster_as("nova").await;
        // The worker declares the topology (the parking lot included); it never reads parked
        // jobs.
        let worker = RunningWorker::start(test_topology(prefix), "nova").await;
        Fixture {
            vms: cluster.pool(&services.nova_pool).expect("nova pool"),
            images: cluster.pool(&services.glance_pool).expect("glance pool"),
            glance: glance_client(&services.glance_url),
            services,
            worker,
        }
    }

    fn topology(&self) -> &Topology {
        &self.worker.topology
    }

    async fn finish(self) {
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
async fn purge_removes_only_the_jobs_marked_artefacts() {
    let f = Fixture::new("purge-marks").await;
    let pool = f.services.nova_pool.clone();

    // Job A: its source snapshot, its marked clone and its full-copy snapshot remain; the
    // disk also has a snapshot of somebody's.
    let disk_a = instance_disk_name();
    make_disk(&f.vms, &disk_a, 32 * MIB, 2).await;
    let image_a = f
        .glance
        .create_image(&NewImage::raw("purge-a"))
        .await
        .expect("image");
    let (source_snap, fallback_snap) = (
        format!("snapq-{}", image_a.id),
        format!("snapq-fallback-{}", image_a.id),
    );
    snapshot(&f.vms, &disk_a, "users-backup").await;
    snapshot(&f.vms, &disk_a, &source_snap).await;
    snapshot(&f.vms, &disk_a, &fallback_snap).await;
    let (images, vms, clone, snap, mark) = (
        f.images.clone(),
        f.vms.clone(),
        image_a.id.to_string(),
        source_snap.clone(),
        serde_json::json!({"image_id": image_a.id, "source": format!("{pool}/{disk_a}")})
            .to_string(),
    );
    let parent = disk_a.clone();
    run_blocking(move || {
        images.clone_from(&vms, &parent, &snap, &clone, 1)?;
        images
            .open(&clone)?
            .set_metadata(snapq_worker::provenance::MARK_KEY, &mark)
    })
    .await
    .expect("the job's marked clone");
    let backup_digest = content_digest(&f.vms, &disk_a, Some("users-backup")).await;
    let request_a = request(&pool, &disk_a, image_a.id);

    // Job B: under its clone's name sits an RBD image snapq did not make.
    let disk_b = instance_disk_name();
    make_disk(&f.vms, &disk_b, 16 * MIB, 1).await;
    let image_b = f
        .glance
        .create_image(&NewImage::raw("purge-b"))
        .await
        .expect("image");
    make_disk(&f.images, &image_b.id.to_string(), 8 * MIB, 2).await;
    snapshot(&f.vms, &disk_b, &format!("snapq-{}", image_b.id)).await;
    let foreign_digest = content_digest(&f.images, &image_b.id.to_string(), None).await;
    let request_b = request(&pool, &disk_b, image_b.id);

    park(f.topology(), &request_a).await;
    park(f.topology(), &request_b).await;

    let (ok, out) = purge(&f.services, f.topology(), &request_a.unique_id);
    assert!(ok && out.contains("purged"), "{out}");
    assert_eq!(snapshots(&f.vms, &disk_a).await, vec!["users-backup"]);
    assert_eq!(
        content_digest(&f.vms, &disk_a, Some("users-backup")).await,
        backup_digest
    );
    assert!(
        !exists(&f.images, &image_a.id.to_string()).await,
        "the marked clone went"
    );
    assert!(
        !lease_object_exists(&f.services, &lease_object(image_a.id)).await,
        "no lease object left"
    );

    let (ok, out) = purge(&f.services, f.topology(), &request_b.unique_id);
    assert!(ok && out.contains("purged"), "{out}");
    assert!(
        snapshots(&f.vms, &disk_b).await.is_empty(),
        "its marked snapshot went"
    );
    assert_eq!(
        content_digest(&f.images, &image_b.id.to_string(), None).await,
        foreign_digest,
        "the image snapq did not make stays as it was"
    );
    assert_eq!(rabbit::depth(&f.topology().parked_queue).await, 0);

    let (vms, images, a, b, ib) = (
        f.vms.clone(),
        f.images.clone(),
        disk_a.clone(),
        disk_b.clone(),
        image_b.id.to_string(),
    );
    run_blocking(move || {
        vms.open(&a)?.remove_snap("users-backup")?;
        vms.remove_image(&a)?;
        vms.remove_image(&b)?;
        images.remove_image(&ib)
    })
    .await
    .expect("remove the test images");
    f.glance.delete_image(image_a.id).await.expect("delete");
    f.glance.delete_image(image_b.id).await.expect("delete");
    f.finish().await;
}

#[tokio::test]
async fn purge_refuses_while_another_job_of_the_image_is_under_way_and_skips_forbidden_disks() {
    let f = Fixture::new("purge-live").await;
    let pool = f.services.nova_pool.clone();

    // A live job of the same image and disk, between two steps: its record is on the lease
    // object and its snapshot on the disk.
    let disk = instance_disk_name();
    make_disk(&f.vms, &disk, 16 * MIB, 1).await;
    let image = f
        .glance
        .create_image(&NewImage::raw("purge-live"))
        .await
        .expect("image");
    let spec = format!("{pool}/{disk}");
    let lease = JobLease::acquire(
        &f.vms,
        image.id,
        ("the-live-job", &spec),
        "purge-test",
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|e| panic!("lease: {e:?}"));
    assert_eq!(lease.claim().await.expect("claim"), Claim::Ours);
    snapshot(&f.vms, &disk, &format!("snapq-{}", image.id)).await;
    lease.release(Release::After(Step::SnapshotSource)).await;
    let parked = request(&pool, &disk, image.id);
    park(f.topology(), &parked).await;

    let (ok, out) = purge(&f.services, f.topology(), &parked.unique_id);
    assert!(!ok && out.contains("the-live-job"), "{out}");
    assert_eq!(
        snapshots(&f.vms, &disk).await,
        vec![format!("snapq-{}", image.id)],
        "the live job's snapshot stays"
    );
    assert!(lease_object_exists(&f.services, &lease_object(image.id)).await);
    assert_eq!(
        rabbit::depth(&f.topology().parked_queue).await,
        1,
        "the refused purge keeps the job parked"
    );

    // A parked request naming a disk the policy forbids: the message goes, Ceph is untouched.
    let volume = format!("volume-{}", Uuid::new_v4());
    make_disk(&f.vms, &volume, 8 * MIB, 1).await;
    let other_image = Uuid::new_v4();
    snapshot(&f.vms, &volume, &format!("snapq-{other_image}")).await;
    let forbidden = request(&pool, &volume, other_image);
    park(f.topology(), &forbidden).await;
    let (ok, out) = purge(&f.services, f.topology(), &forbidden.unique_id);
    assert!(
        ok && out.contains("nothing in Ceph is touched") && out.contains("purged"),
        "{out}"
    );
    assert_eq!(
        snapshots(&f.vms, &volume).await,
        vec![format!("snapq-{other_image}")]
    );

    // Clean up: the live job "ends" (its lease object goes with it), then the test's images.
    let lease = JobLease::acquire(
        &f.vms,
        image.id,
        ("the-live-job", &spec),
        "purge-test",
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|e| panic!("lease: {e:?}"));
    lease.release(Release::End).await;
    let (vms, d, v, s1, s2) = (
        f.vms.clone(),
        disk.clone(),
        volume.clone(),
        format!("snapq-{}", image.id),
        format!("snapq-{other_image}"),
    );
    run_blocking(move || {
        vms.open(&d)?.remove_snap(&s1)?;
        vms.remove_image(&d)?;
        vms.open(&v)?.remove_snap(&s2)?;
        vms.remove_image(&v)
    })
    .await
    .expect("remove the test disks");
    f.glance.delete_image(image.id).await.expect("delete");
    let queues_left = rabbit::depth(&f.topology().parked_queue).await;
    assert_eq!(queues_left, 1, "only the refused job is still parked");
    f.finish().await;
}

/// Whether Nova's pool (the lease pool here) holds RADOS object `object`.
async fn lease_object_exists(services: &Services, object: &str) -> bool {
    snapq_tests::rados_objects::object_exists(&services.nova_pool, object).await
}
