//! snapq as its own Keystone service identity, against the real dev Keystone and a Glance
//! behind keystonemiddleware (`dev/up keystone`): password and application-credential auth,
//! Glance found in the catalog, tokens renewed as they expire (the dev Keystone issues 60 s
//! tokens and refuses expired ones), a wrong password failing at start naming the option,
//! and a user without the `service` role getting the full copy.

use std::time::{Duration, Instant};

use snapq_common::glance::{GlanceClient, GlanceConfig, LocationApi, NewImage};
use snapq_common::keystone::{Credentials, KeystoneConfig, KeystoneError, KeystoneSession};
use snapq_common::message::{DiskSpec, SnapshotRequest};
use snapq_common::rbd::run_blocking;
use snapq_producer::Producer;
use snapq_tests::disks::{make_disk, MIB};
use snapq_tests::worker_harness::{test_topology, RunningWorker};
use snapq_tests::{cluster_as, keystone_setting as ks, rabbit, Services};
use snapq_worker::Role;
use uuid::Uuid;

fn password(user: &str, password: &str, project: &str) -> KeystoneConfig {
    KeystoneConfig {
        auth_url: ks("SNAPQ_KEYSTONE_AUTH_URL"),
        credentials: Credentials::Password {
            username: user.into(),
            user_domain_name: "Default".into(),
            password: password.into(),
            project_name: project.into(),
            project_domain_name: "Default".into(),
        },
        request_timeout: Duration::from_secs(30),
        ca_file: None,
    }
}

fn snapq_identity() -> KeystoneConfig {
    password("snapq", &ks("SNAPQ_KEYSTONE_SNAPQ_PASSWORD"), "service")
}

fn demo_identity() -> KeystoneConfig {
    password("demo", &ks("SNAPQ_KEYSTONE_DEMO_PASSWORD"), "demo")
}

async fn session(config: KeystoneConfig) -> KeystoneSession {
    KeystoneSession::connect(config)
        .await
        .unwrap_or_else(|e| panic!("authenticate with the dev Keystone: {e}"))
}

/// A Glance client of `session`, Glance found in its catalog.
async fn glance_of(session: &KeystoneSession) -> GlanceClient {
    let url = session
        .endpoint("image", "internal", Some("RegionOne"))
        .await
        .expect("Glance in the catalog");
    GlanceClient::new(GlanceConfig {
        url,
        token: None,
        keystone: Some(session.clone()),
        request_timeout: Duration::from_secs(30),
        ca_file: None,
        location_api: LocationApi::Auto,
    })
    .expect("a Glance client")
}

/// A Nova-style disk, a queued image of the demo project, and the request (from the demo
/// project) that snapshots one into the other.
async fn demo_job(demo: &GlanceClient, prefix: &str) -> (String, Uuid, SnapshotRequest) {
    let services = Services::from_env();
    let vms = cluster_as("nova")
        .await
        .pool(&services.nova_pool)
        .expect("nova pool");
    let disk = format!("{}_disk", Uuid::new_v4());
    make_disk(&vms, &disk, 64 * MIB, 4).await;
    let image = demo
        .create_image(&NewImage::raw(prefix))
        .await
        .expect("the demo user makes a queued image");
    assert_eq!(
        image.owner.as_deref(),
        Some(ks("SNAPQ_KEYSTONE_DEMO_PROJECT_ID").as_str())
    );
    let mut request = SnapshotRequest::new(
        DiskSpec::new(services.nova_pool, disk.clone()).expect("a disk"),
        image.id,
        prefix.to_string(),
    );
    request.context.insert(
        "project_id",
        serde_json::json!(ks("SNAPQ_KEYSTONE_DEMO_PROJECT_ID")),
    );
    (disk, image.id, request)
}

async fn remove(demo: &GlanceClient, disk: String, image_id: Uuid) {
    demo.delete_image(image_id).await.expect("delete the image");
    let vms = cluster_as("nova")
        .await
        .pool(&Services::from_env().nova_pool)
        .expect("nova pool");
    run_blocking(move || vms.remove_image(&disk))
        .await
        .expect("remove the disk");
}

#[tokio::test]
async fn password_auth_finds_glance_in_the_catalog_and_snapshots_a_projects_image() {
    let snapq = session(snapq_identity()).await;
    let roles = snapq.roles().await;
    assert!(
        roles.iter().any(|r| r == "service") && roles.iter().any(|r| r == "admin"),
        "snapq's token holds the roles the README lists: {roles:?}"
    );
    let glance = glance_of(&snapq).await;
    assert_eq!(glance.base_url(), ks("SNAPQ_KEYSTONE_GLANCE_URL"));
    let demo = glance_of(&session(demo_identity()).await).await;

    let (disk, image_id, request) = demo_job(&demo, "keystone-direct").await;
    let topology = test_topology("keystone-direct");
    let worker =
        RunningWorker::start_with_client(topology.clone(), "nova", Role::Work, glance).await;
    let producer = Producer::connect(&Services::from_env().amqp_url, topology.clone())
        .await
        .expect("producer");
    let reply = producer
        .call(request, Duration::from_secs(120))
        .await
        .expect("a reply");
    assert!(reply.failure.is_none(), "{:?}", reply.failure);
    let result = reply.result.expect("a result");
    assert_eq!(result["method"], "direct", "{result}");
    let record = demo.get_image(image_id).await.expect("the image");
    assert_eq!(record.status, "active");

    producer.close().await;
    worker.stop().await;
    remove(&demo, disk, image_id).await;
    rabbit::delete_queues(&topology.all_queues()).await;
}

#[tokio::test]
async fn application_credential_authenticates_with_snapqs_roles() {
    let config = KeystoneConfig {
        auth_url: ks("SNAPQ_KEYSTONE_AUTH_URL"),
        credentials: Credentials::ApplicationCredential {
            id: Some(ks("SNAPQ_KEYSTONE_APP_CRED_ID")),
            name: None,
            username: None,
            user_domain_name: "Default".into(),
            secret: ks("SNAPQ_KEYSTONE_APP_CRED_SECRET"),
        },
        request_timeout: Duration::from_secs(30),
        ca_file: None,
    };
    let snapq = session(config).await;
    assert!(snapq.roles().await.iter().any(|r| r == "service"));
    let glance = glance_of(&snapq).await;
    // Glance accepts the token: an unknown image is a 404, not a 401.
    let missing = Uuid::new_v4();
    let err = glance.get_image(missing).await.expect_err("no such image");
    assert!(
        matches!(err, snapq_common::glance::GlanceError::NotFound { id } if id == missing),
        "{err}"
    );

    let by_name = KeystoneConfig {
        auth_url: ks("SNAPQ_KEYSTONE_AUTH_URL"),
        credentials: Credentials::ApplicationCredential {
            id: None,
            name: Some("snapq-dev".into()),
            username: Some("snapq".into()),
            user_domain_name: "Default".into(),
            secret: "not-the-secret".into(),
        },
        request_timeout: Duration::from_secs(30),
        ca_file: None,
    };
    let err = KeystoneSession::connect(by_name)
        .await
        .expect_err("a wrong secret is refused");
    let text = err.to_string();
    assert!(
        matches!(err, KeystoneError::Refused { status: 401, .. }),
        "{text}"
    );
    assert!(
        text.contains("SNAPQ_KEYSTONE_APPLICATION_CREDENTIAL_SECRET"),
        "{text}"
    );
    assert!(!text.contains("not-the-secret"), "{text}");
}

#[tokio::test]
async fn wrong_password_fails_at_start_naming_the_option() {
    let started = Instant::now();
    let err = KeystoneSession::connect(password("snapq", "wrong-password-123", "service"))
        .await
        .expect_err("a wrong password is refused");
    let text = err.to_string();
    assert!(text.contains("SNAPQ_KEYSTONE_PASSWORD"), "{text}");
    assert!(!text.contains("wrong-password-123"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10), "fails fast");

    // The worker process exits at start with the same message, before any job.
    let services = Services::from_env();
    let output = tokio::process::Command::new(snapq_tests::worker_process::worker_binary())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SNAPQ_AMQP_URL", &services.amqp_url)
        .env("SNAPQ_CEPH_CONF", &services.ceph_conf)
        .env("SNAPQ_CEPH_USER", "nova")
        .env("SNAPQ_KEYSTONE_AUTH_URL", ks("SNAPQ_KEYSTONE_AUTH_URL"))
        .env("SNAPQ_KEYSTONE_USERNAME", "snapq")
        .env("SNAPQ_KEYSTONE_PROJECT_NAME", "service")
        .env("SNAPQ_KEYSTONE_PASSWORD", "wrong-password-123")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("the worker exits at start")
        .expect("run snapq-worker");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SNAPQ_KEYSTONE_PASSWORD"), "{stderr}");
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(!stderr.contains("wrong-password-123"), "{stderr}");
}

#[tokio::test]
async fn a_worker_outlives_its_tokens_and_renews_them() {
    let lifetime: u64 = ks("SNAPQ_KEYSTONE_TOKEN_EXPIRATION")
        .parse()
        .expect("a token lifetime in seconds");
    assert!(
        lifetime <= 120,
        "the dev Keystone's tokens must be short for this test (KEYSTONE_TOKEN_EXPIRATION)"
    );
    let snapq = session(snapq_identity()).await;
    let glance = glance_of(&snapq).await;
    let demo_session = session(demo_identity()).await;
    let demo = glance_of(&demo_session).await;
    let topology = test_topology("keystone-renew");
    let worker =
        RunningWorker::start_with_client(topology.clone(), "nova", Role::Work, glance).await;
    let producer = Producer::connect(&Services::from_env().amqp_url, topology.clone())
        .await
        .expect("producer");

    let mut made = Vec::new();
    let first_token = snapq.token().await.expect("a token");
    // Jobs before, during and after the first token's life runs out.
    let deadline = Instant::now() + Duration::from_secs(lifetime + 5);
    let mut round = 0;
    while Instant::now() < deadline || round < 2 {
        round += 1;
        let (disk, image_id, request) = demo_job(&demo, &format!("keystone-renew-{round}")).await;
        let reply = producer
            .call(request, Duration::from_secs(120))
            .await
            .expect("a reply");
        assert!(
            reply.failure.is_none(),
            "round {round}: {:?}",
            reply.failure
        );
        made.push((disk, image_id));
        if Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(lifetime / 3)).await;
        }
    }
    assert_ne!(
        snapq.token().await.expect("a token"),
        first_token,
        "the token was renewed"
    );
    assert!(snapq.tokens_issued() >= 2, "{}", snapq.tokens_issued());
    println!(
        "{round} jobs over {} s of {lifetime} s tokens: {} tokens issued",
        lifetime + 5,
        snapq.tokens_issued()
    );

    producer.close().await;
    worker.stop().await;
    for (disk, image_id) in made {
        remove(&demo, disk, image_id).await;
    }
    rabbit::delete_queues(&topology.all_queues()).await;
}

#[tokio::test]
async fn without_the_service_role_the_location_api_is_refused_and_the_full_copy_is_made() {
    // The demo user has `member` on its own project only: Glance lets it make and see its
    // images but not register an rbd location.
    let demo_session = session(demo_identity()).await;
    assert!(!demo_session.roles().await.iter().any(|r| r == "service"));
    let demo = glance_of(&demo_session).await;
    let (disk, image_id, request) = demo_job(&demo, "keystone-no-service").await;
    let topology = test_topology("keystone-no-service");
    let worker =
        RunningWorker::start_with_client(topology.clone(), "nova", Role::Work, demo.clone()).await;
    let dead_letter =
        RunningWorker::start_with_client(topology.clone(), "nova", Role::DeadLetter, demo.clone())
            .await;
    let producer = Producer::connect(&Services::from_env().amqp_url, topology.clone())
        .await
        .expect("producer");
    let reply = producer
        .call(request, Duration::from_secs(180))
        .await
        .expect("a reply");
    assert!(reply.failure.is_none(), "{:?}", reply.failure);
    let result = reply.result.expect("a result");
    assert_eq!(result["method"], "fallback", "{result}");
    assert_eq!(
        demo.get_image(image_id).await.expect("image").status,
        "active"
    );

    producer.close().await;
    worker.stop().await;
    dead_letter.stop().await;
    remove(&demo, disk, image_id).await;
    rabbit::delete_queues(&topology.all_queues()).await;
}
