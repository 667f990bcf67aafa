//! snapq's oslo notifications, received by the real oslo.messaging notification listener
//! (`tests/oslo/notification_listener.py`, run with `SNAPQ_OSLO_PYTHON`): start and end of a
//! job made by the direct path, of one made by the full copy, start and error of one that is
//! parked; the request's context comes along, its token does not.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use snapq_common::rbd::run_blocking;
use snapq_producer::Producer;
use snapq_tests::disks::{make_disk, MIB};
use snapq_tests::worker_harness::{
    glance_client, queued_image_request, test_topology, RunningWorker,
};
use snapq_tests::{cluster_as, rabbit, setting, unique_name, Services};
use snapq_worker::settings::NotificationSettings;
use snapq_worker::Role;
use tokio::io::{AsyncBufReadExt, BufReader};
use uuid::Uuid;

const DEV_PROJECT: &str = "snapq-dev-project";
const TOKEN: &str = "tok-never-in-a-notification";

fn listener_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oslo/notification_listener.py")
}

fn with_notifications(topic: &str) -> impl FnOnce(&mut snapq_worker::WorkerSettings) {
    let topic = topic.to_string();
    move |settings| {
        settings.notifications = NotificationSettings {
            enabled: true,
            topics: vec![topic],
            publisher_id: "snapq.test-host".into(),
        };
    }
}

#[tokio::test]
async fn oslo_listener_receives_start_end_and_error_with_the_context_and_no_token() {
    let services = Services::from_env();
    let topic = unique_name("notif");
    let expected = 6;
    let mut listener = tokio::process::Command::new(setting("SNAPQ_OSLO_PYTHON"))
        .arg(listener_script())
        .args([
            "--topic",
            &topic,
            "--count",
            &expected.to_string(),
            "--timeout",
            "240",
        ])
        .env("SNAPQ_AMQP_URL", &services.amqp_url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run the oslo notification listener");
    let mut stderr = BufReader::new(listener.stderr.take().expect("stderr")).lines();
    let listening = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = stderr.next_line().await {
            if line.contains("listening") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(listening, Ok(true), "the oslo listener started");

    let cluster = cluster_as("nova").await;
    let vms = cluster.pool(&services.nova_pool).expect("nova pool");
    let disk = format!("{}_disk", Uuid::new_v4());
    make_disk(&vms, &disk, 32 * MIB, 2).await;
    let missing = format!("{}_disk", Uuid::new_v4());

    // Direct path and parked job: one worker pair on the dev Glance.
    let topology = test_topology("notif");
    let glance = glance_client(&services.glance_url);
    let worker = RunningWorker::start_configured(
        topology.clone(),
        "nova",
        Role::Work,
        glance.clone(),
        with_notifications(&topic),
    )
    .await;
    let dead_letter = RunningWorker::start_configured(
        topology.clone(),
        "nova",
        Role::DeadLetter,
        glance.clone(),
        with_notifications(&topic),
    )
    .await;
    // The full copy: a pair on the Glance that refuses the location API.
    let no_service_url = setting("SNAPQ_GLANCE_NO_SERVICE_URL");
    let no_service = glance_client(&no_service_url);
    let copy_topology = test_topology("notif-copy");
    let copy_worker = RunningWorker::start_configured(
        copy_topology.clone(),
        "nova",
        Role::Work,
        no_service.clone(),
        with_notifications(&topic),
    )
    .await;
    let copy_dead_letter = RunningWorker::start_configured(
        copy_topology.clone(),
        "nova",
        Role::DeadLetter,
        no_service.clone(),
        with_notifications(&topic),
    )
    .await;

    let context = |request_id: &str| {
        json!({"request_id": request_id, "global_request_id": format!("g-{request_id}"),
               "project_id": DEV_PROJECT, "user_id": "u-notif", "auth_token": TOKEN})
    };
    let call = |glance: snapq_common::glance::GlanceClient,
                topology: snapq_common::amqp::Topology,
                disk: String,
                request_id: &'static str| async move {
        let (image, mut request) = queued_image_request(&glance, &disk, request_id).await;
        for (key, value) in context(request_id).as_object().expect("an object") {
            request.context.insert(key.clone(), value.clone());
        }
        let producer = Producer::connect(&Services::from_env().amqp_url, topology)
            .await
            .expect("producer");
        let reply = producer
            .call(request, Duration::from_secs(180))
            .await
            .expect("a reply");
        producer.close().await;
        (image.id, reply)
    };
    let (direct_id, direct) =
        call(glance.clone(), topology.clone(), disk.clone(), "req-direct").await;
    assert!(direct.failure.is_none(), "{:?}", direct.failure);
    let (parked_id, parked) = call(
        glance.clone(),
        topology.clone(),
        missing.clone(),
        "req-parked",
    )
    .await;
    assert!(parked.failure.is_some(), "a missing disk fails");
    let (copied_id, copied) = call(
        no_service.clone(),
        copy_topology.clone(),
        disk.clone(),
        "req-copy",
    )
    .await;
    assert!(copied.failure.is_none(), "{:?}", copied.failure);

    let mut events: Vec<Value> = Vec::new();
    let mut stdout = BufReader::new(listener.stdout.take().expect("stdout")).lines();
    let _ = tokio::time::timeout(Duration::from_secs(120), async {
        while events.len() < expected {
            match stdout.next_line().await {
                Ok(Some(line)) => events.push(serde_json::from_str(&line).expect("a JSON line")),
                _ => break,
            }
        }
    })
    .await;
    let shown = events
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    let find = |image: Uuid, event_type: &str| {
        events
            .iter()
            .find(|e| {
                e["event_type"] == event_type && e["payload"]["image_id"] == image.to_string()
            })
            .unwrap_or_else(|| panic!("no {event_type} for {image} among:\n{shown}"))
    };

    for (image, request_id) in [
        (direct_id, "req-direct"),
        (parked_id, "req-parked"),
        (copied_id, "req-copy"),
    ] {
        let start = find(image, "snapq.snapshot.start");
        assert_eq!(start["priority"], "info");
        assert_eq!(start["publisher_id"], "snapq.test-host");
        assert_eq!(start["ctxt"]["request_id"], request_id, "{start}");
        assert_eq!(
            start["ctxt"]["global_request_id"],
            format!("g-{request_id}")
        );
        assert_eq!(start["ctxt"]["project_id"], DEV_PROJECT);
        assert_eq!(start["ctxt"]["user_id"], "u-notif");
    }
    let end = find(direct_id, "snapq.snapshot.end");
    assert_eq!(end["priority"], "info");
    assert_eq!(end["payload"]["method"], "direct");
    assert_eq!(
        end["payload"]["disk"],
        format!("{}/{disk}", services.nova_pool)
    );
    assert!(
        end["payload"]["seconds"].as_f64().is_some_and(|s| s > 0.0),
        "{end}"
    );
    // make_disk wrote two 4 MiB objects of the 32 MiB disk.
    assert_eq!(end["payload"]["bytes"], 8 * MIB, "{end}");
    let copy_end = find(copied_id, "snapq.snapshot.end");
    assert_eq!(copy_end["payload"]["method"], "fallback");
    assert_eq!(
        copy_end["payload"]["bytes"],
        8 * MIB,
        "the full copy reads the data only: {copy_end}"
    );
    let error = find(parked_id, "snapq.snapshot.error");
    assert_eq!(error["priority"], "error");
    assert_eq!(error["payload"]["step"], "snapshot_source", "{error}");
    assert!(
        error["payload"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not exist")),
        "{error}"
    );
    assert!(
        !shown.contains(TOKEN),
        "a token reached a notification:\n{shown}"
    );
    assert_eq!(
        events.len(),
        expected,
        "exactly these notifications:\n{shown}"
    );

    worker.stop().await;
    dead_letter.stop().await;
    copy_worker.stop().await;
    copy_dead_letter.stop().await;
    let _ = listener.wait().await;
    for (client, id) in [
        (&glance, direct_id),
        (&glance, parked_id),
        (&no_service, copied_id),
    ] {
        client.delete_image(id).await.expect("delete image");
    }
    run_blocking(move || vms.remove_image(&disk))
        .await
        .expect("remove disk");
    rabbit::delete_queues(&topology.all_queues()).await;
    rabbit::delete_queues(&copy_topology.all_queues()).await;
    rabbit::delete_queues(&[&format!("{topic}.info"), &format!("{topic}.error")]).await;
}
