//! TLS endpoints of the dev services, made by the dev scripts with their own CA
//! (`dev/tls.sh`): Keystone and the Keystone-checking Glance under uWSGI's https-socket, and
//! RabbitMQ's TLS listener. Each is reached with `--*-ca-file`; without it, the certificate
//! error names the endpoint and why.

use std::path::PathBuf;
use std::time::Duration;

use snapq_common::glance::{GlanceClient, GlanceConfig, GlanceError, LocationApi};
use snapq_common::keystone::{Credentials, KeystoneConfig, KeystoneSession};
use snapq_producer::Producer;
use snapq_tests::disks::{make_disk, MIB};
use snapq_tests::worker_harness::{
    glance_client, queued_image_request, test_topology, RunningWorker,
};
use snapq_tests::{cluster_as, keystone_setting as ks, rabbit, setting, Services};
use snapq_worker::Role;
use uuid::Uuid;

fn ca_file() -> PathBuf {
    PathBuf::from(setting("SNAPQ_TLS_CA_FILE"))
}

fn keystone_over_tls(ca_file: Option<PathBuf>) -> KeystoneConfig {
    KeystoneConfig {
        auth_url: ks("SNAPQ_KEYSTONE_TLS_AUTH_URL"),
        credentials: Credentials::Password {
            username: "snapq".into(),
            user_domain_name: "Default".into(),
            password: ks("SNAPQ_KEYSTONE_SNAPQ_PASSWORD"),
            project_name: "service".into(),
            project_domain_name: "Default".into(),
        },
        request_timeout: Duration::from_secs(30),
        ca_file,
    }
}

#[tokio::test]
async fn https_keystone_and_glance_with_the_ca_file_and_a_named_error_without() {
    let session = KeystoneSession::connect(keystone_over_tls(Some(ca_file())))
        .await
        .unwrap_or_else(|e| panic!("Keystone over https with the dev CA: {e}"));
    let glance = GlanceClient::new(GlanceConfig {
        url: ks("SNAPQ_KEYSTONE_TLS_GLANCE_URL"),
        ca_file: Some(ca_file()),
        token: None,
        keystone: Some(session),
        request_timeout: Duration::from_secs(30),
        location_api: LocationApi::Auto,
    })
    .expect("a Glance client");
    let missing = Uuid::new_v4();
    let err = glance.get_image(missing).await.expect_err("no such image");
    assert!(
        matches!(err, GlanceError::NotFound { id } if id == missing),
        "an https Glance answered with the token: {err}"
    );

    let err = KeystoneSession::connect(keystone_over_tls(None))
        .await
        .expect_err("the dev CA is not among the system's");
    let text = err.to_string();
    assert!(
        text.contains(&ks("SNAPQ_KEYSTONE_TLS_AUTH_URL")),
        "names the endpoint: {text}"
    );
    assert!(
        text.to_lowercase().contains("certificate"),
        "says why: {text}"
    );

    let without_ca = GlanceClient::new(GlanceConfig {
        url: ks("SNAPQ_KEYSTONE_TLS_GLANCE_URL"),
        ca_file: None,
        token: None,
        keystone: None,
        request_timeout: Duration::from_secs(30),
        location_api: LocationApi::Auto,
    })
    .expect("a Glance client");
    let text = without_ca
        .get_image(missing)
        .await
        .expect_err("an unknown issuer")
        .to_string();
    println!("glance without the CA: {text}");
    assert!(
        text.contains("/v2/images/") && text.to_lowercase().contains("certificate"),
        "{text}"
    );
}

#[tokio::test]
async fn a_job_runs_over_amqps_and_a_broker_certificate_error_names_the_address() {
    let services = Services::from_env();
    let amqps = setting("SNAPQ_AMQPS_URL");
    let ca = std::fs::read_to_string(ca_file()).expect("the dev CA");
    let cluster = cluster_as("nova").await;
    let vms = cluster.pool(&services.nova_pool).expect("nova pool");
    let disk = format!("{}_disk", Uuid::new_v4());
    make_disk(&vms, &disk, 16 * MIB, 1).await;

    let topology = test_topology("tls");
    let glance = glance_client(&services.glance_url);
    let (amqps2, ca2) = (amqps.clone(), ca.clone());
    let worker = RunningWorker::start_configured(
        topology.clone(),
        "nova",
        Role::Work,
        glance.clone(),
        move |settings| {
            settings.amqp_url = amqps2;
            settings.amqp_ca = Some(ca2);
        },
    )
    .await;
    let (image, request) = queued_image_request(&glance, &disk, "tls-job").await;
    let producer = Producer::connect_with_ca(&amqps, topology.clone(), Some(&ca))
        .await
        .expect("the producer connects over amqps");
    let reply = producer
        .call(request, Duration::from_secs(120))
        .await
        .expect("a reply over amqps");
    assert!(reply.failure.is_none(), "{:?}", reply.failure);
    producer.close().await;
    worker.stop().await;

    let err = match Producer::connect(&amqps, topology.clone()).await {
        Ok(_) => panic!("connected to the dev broker without its CA"),
        Err(e) => e.to_string(),
    };
    println!("broker without the CA: {err}");
    assert!(err.contains("127.0.0.1:"), "names the address: {err}");
    assert!(
        !err.contains(&setting("SNAPQ_RABBIT_MGMT_PASSWORD")),
        "{err}"
    );
    assert!(
        err.to_lowercase().contains("certificate") || err.to_lowercase().contains("tls"),
        "says why: {err}"
    );

    glance.delete_image(image.id).await.expect("delete image");
    snapq_common::rbd::run_blocking(move || vms.remove_image(&disk))
        .await
        .expect("remove disk");
    rabbit::delete_queues(&topology.all_queues()).await;
}
