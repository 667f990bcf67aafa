//! What the broker does with snapq's queues, checked against the real RabbitMQ: every queue
//! carries the arguments snapq means (read back through the management API), browsing the
//! parking lot as `snapq jobs` does counts nothing and moves nothing, a message the
//! dead-letter queue cannot get rid of ends up in the parking lot instead of being dropped,
//! and a parking lot an older snapq declared as a quorum queue is refused with what to do.

use std::process::Command;
use std::time::Duration;

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicRejectOptions, ExchangeDeleteOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::{json, Value};
use snapq_common::amqp::{
    declare_topology, oslo_properties, publish_confirmed, AmqpError, QueueRole, Topology,
    DEAD_LETTER_DELIVERY_LIMIT,
};
use snapq_common::job::{DeadLetterReason, HistoryEntry, JobState};
use snapq_common::message::{DiskSpec, SnapshotRequest};
use snapq_producer::jobs::{self, ReplayMode, DEAD_LETTER_LIMIT_REASON};
use snapq_producer::Producer;
use snapq_tests::worker_harness::test_topology;
use snapq_tests::worker_process::binary;
use snapq_tests::{rabbit, Services};

/// The management API, as the dev broker's settings name it.
struct Mgmt {
    http: reqwest::Client,
    url: String,
    user: String,
    password: String,
}

impl Mgmt {
    fn new() -> Mgmt {
        let services = Services::from_env();
        Mgmt {
            http: reqwest::Client::new(),
            url: services.rabbit_mgmt_url.trim_end_matches('/').to_string(),
            user: services.rabbit_mgmt_user,
            password: services.rabbit_mgmt_password,
        }
    }

    /// `GET /api/queues/%2F/<queue>`: the queue as the broker holds it.
    async fn queue(&self, queue: &str) -> Value {
        let url = format!("{}/api/queues/%2F/{}", self.url, percent_encode(queue));
        let response = self
            .http
            .get(&url)
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .unwrap_or_else(|e| panic!("management API unreachable: {e}"));
        assert!(
            response.status().is_success(),
            "management API: GET {url}: {}",
            response.status()
        );
        response.json().await.expect("the queue as JSON")
    }
}

async fn arguments(mgmt: &Mgmt, queue: &str) -> Value {
    mgmt.queue(queue).await["arguments"].clone()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An AMQP argument as the management API shows it.
fn as_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::LongString(s) => Value::String(String::from_utf8_lossy(s.as_bytes()).into()),
        AMQPValue::ShortString(s) => Value::String(s.as_str().into()),
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        other => panic!("no JSON form for the queue argument {other:?}"),
    }
}

fn table_as_json(table: &FieldTable) -> Value {
    Value::Object(
        table
            .inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), as_json(v)))
            .collect(),
    )
}

/// Declares `topology` the way the worker does: a confirmed channel, then the topology.
async fn declare(topology: &Topology) {
    let (connection, channel) = rabbit::channel().await;
    declare_topology(&channel, topology)
        .await
        .unwrap_or_else(|e| panic!("declare the topology: {e}"));
    let _ = connection.close(200, "declared".into()).await;
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// A parked job as the dead-letter consumer parks it: a request, its state in the headers
/// (plus one foreign header, which must survive too).
fn parked_job(n: u32, reason: DeadLetterReason) -> (Vec<u8>, FieldTable, String) {
    let request = SnapshotRequest::new(
        DiskSpec::new("vms", format!("{}_disk", uuid::Uuid::new_v4())).expect("valid disk"),
        uuid::Uuid::new_v4(),
        format!("parked {n}"),
    );
    let mut state = JobState {
        job_id: Some(request.unique_id.clone()),
        started_ms: Some(1_700_000_000_000 + u64::from(n)),
        history: vec![HistoryEntry {
            step: "snapshot_source".into(),
            worker: "broker-semantics".into(),
            at_ms: 1_700_000_000_500 + u64::from(n),
            seconds: 0.25,
            did: "failed".into(),
        }],
        last_error: Some(format!("failure number {n}")),
        ..JobState::fresh()
    };
    state.set_reason(reason);
    let mut headers = state.to_headers();
    headers.insert("x-operator-note".into(), text(&format!("note {n}")));
    (request.encode(), headers, request.unique_id)
}

/// Runs `snapq jobs ...` against `topology`; returns (success, stdout + stderr).
fn snapq_jobs(topology: &Topology, args: &[&str]) -> (bool, String) {
    let services = Services::from_env();
    let output = Command::new(binary("snapq"))
        .arg("jobs")
        .args(args)
        .env("SNAPQ_AMQP_URL", &services.amqp_url)
        .env("SNAPQ_TOPIC", &topology.config.topic)
        .env(
            "SNAPQ_DELIVERY_LIMIT",
            topology.config.delivery_limit.to_string(),
        )
        .env("SNAPQ_CEPH_CONF", &services.ceph_conf)
        .env("SNAPQ_CEPH_USER", "nova")
        .output()
        .expect("run snapq jobs");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// Deletes the topology's queues and its dead-letter exchange (the request exchange is shared).
async fn clean_up(topology: &Topology) {
    rabbit::delete_queues(&topology.all_queues()).await;
    let (_connection, channel) = rabbit::channel().await;
    let _ = channel
        .exchange_delete(
            topology.dead_letter_exchange.as_str().into(),
            ExchangeDeleteOptions::default(),
        )
        .await;
}

/// Every message of `queue`, taken off it (acknowledged).
async fn take_everything(queue: &str) -> Vec<lapin::message::BasicGetMessage> {
    let mut messages = Vec::new();
    while let Some(message) = rabbit::get_one(queue, Duration::from_millis(300)).await {
        messages.push(message);
    }
    messages
}

#[tokio::test]
async fn every_queue_carries_the_arguments_snapq_intends() {
    let topology = test_topology("bsem-args");
    declare(&topology).await;
    // The worker redeclares after every reconnect: the same declaration is accepted again.
    declare(&topology).await;

    let mgmt = Mgmt::new();
    let declarations = topology.queue_declarations();
    assert_eq!(declarations.len(), topology.all_queues().len());
    for queue in &declarations {
        let seen = mgmt.queue(&queue.name).await;
        let arguments = &seen["arguments"];
        assert_eq!(
            arguments,
            &table_as_json(&queue.arguments),
            "{}: the broker holds other arguments than snapq declares",
            queue.name
        );
        assert_eq!(seen["durable"], json!(true), "{}", queue.name);
        assert_eq!(seen["auto_delete"], json!(false), "{}", queue.name);
        let expected_type = match queue.role {
            QueueRole::Parked => "classic",
            QueueRole::Work | QueueRole::Retry | QueueRole::DeadLetter => "quorum",
        };
        assert_eq!(seen["type"], json!(expected_type), "{}", queue.name);
        if expected_type == "quorum" {
            // The limit is stated, and past it the message is dead-lettered, at least once.
            let limit = arguments["x-delivery-limit"].as_i64();
            assert!(
                limit.is_some_and(|n| n > 0),
                "{}: x-delivery-limit {limit:?}",
                queue.name
            );
            assert!(
                arguments["x-dead-letter-exchange"].is_string()
                    && arguments["x-dead-letter-routing-key"].is_string(),
                "{}: {arguments}",
                queue.name
            );
            assert_eq!(
                arguments["x-dead-letter-strategy"],
                json!("at-least-once"),
                "{}",
                queue.name
            );
            assert_eq!(
                arguments["x-overflow"],
                json!("reject-publish"),
                "{}",
                queue.name
            );
        }
    }

    // Each queue's intended values, spelled out.
    let args = |name| arguments(&mgmt, name);
    let work = args(&topology.work_queue).await;
    assert_eq!(work["x-delivery-limit"], json!(3), "test_topology's limit");
    assert_eq!(
        work["x-dead-letter-exchange"],
        json!(topology.dead_letter_exchange)
    );
    assert_eq!(
        work["x-dead-letter-routing-key"],
        json!(topology.dead_letter_routing_key)
    );
    let dead = args(&topology.dead_letter_queue).await;
    assert_eq!(
        dead["x-delivery-limit"],
        json!(DEAD_LETTER_DELIVERY_LIMIT),
        "the dead-letter queue's own limit"
    );
    assert_eq!(
        dead["x-dead-letter-exchange"],
        json!(""),
        "the default exchange"
    );
    assert_eq!(
        dead["x-dead-letter-routing-key"],
        json!(topology.parked_queue),
        "past its limit, on to the parking lot"
    );
    let parked = args(&topology.parked_queue).await;
    assert_eq!(
        parked,
        json!({"x-queue-type": "classic"}),
        "no delivery limit, no dead-lettering, nothing to expire"
    );
    for retry in &topology.retry_queues {
        let tier = args(&retry.name).await;
        assert_eq!(tier["x-delivery-limit"], json!(3), "{}", retry.name);
        assert_eq!(
            tier["x-message-ttl"],
            json!(retry.delay.as_millis() as u64),
            "{}",
            retry.name
        );
        assert_eq!(
            tier["x-dead-letter-exchange"],
            json!(topology.request_exchange),
            "{}",
            retry.name
        );
        assert_eq!(
            tier["x-dead-letter-routing-key"],
            json!(topology.request_routing_key),
            "{}",
            retry.name
        );
    }
    clean_up(&topology).await;
}

#[tokio::test]
async fn browsing_the_parking_lot_30_times_leaves_every_job_in_place_once_with_its_headers() {
    let topology = test_topology("bsem-browse");
    declare(&topology).await;
    let (_connection, channel) = rabbit::channel().await;
    let reasons = [
        DeadLetterReason::FallbackFailed,
        DeadLetterReason::Park,
        DeadLetterReason::Malformed,
    ];
    let mut published = Vec::new();
    for (n, reason) in reasons.into_iter().enumerate() {
        let (body, headers, id) = parked_job(n as u32, reason);
        publish_confirmed(
            &channel,
            "",
            &topology.parked_queue,
            &body,
            oslo_properties().with_headers(headers.clone()),
        )
        .await
        .expect("park a job");
        published.push((body, headers, id));
    }
    let ids: Vec<String> = published.iter().map(|(_, _, id)| id.clone()).collect();

    // 30 looks, each exactly as `snapq jobs list` looks: connect (declaring the topology),
    // take every parked job, put them all back, close.
    let amqp_url = Services::from_env().amqp_url;
    for look in 1..=30 {
        let producer = Producer::connect(&amqp_url, topology.clone())
            .await
            .expect("connect as snapq jobs does");
        let parked = jobs::take_all(producer.channel(), producer.topology())
            .await
            .expect("read the parking lot");
        let seen: Vec<String> = parked.iter().map(|j| j.id()).collect();
        assert_eq!(seen, ids, "look {look}: every job once, in order");
        for job in &parked {
            let headers = job.message.delivery.properties.headers();
            let headers = headers.as_ref().expect("headers");
            assert!(
                !headers.contains_key("x-delivery-count"),
                "look {look}: the parking lot counts deliveries: {headers:?}"
            );
        }
        jobs::put_back(parked).await;
        producer.close().await;
    }
    // The command itself, too.
    for _ in 0..3 {
        let (ok, listing) = snapq_jobs(&topology, &["list"]);
        assert!(ok, "{listing}");
        let at: Vec<usize> = ids
            .iter()
            .map(|id| {
                listing
                    .find(id.as_str())
                    .unwrap_or_else(|| panic!("{id} not listed: {listing}"))
            })
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "in order: {listing}");
        assert!(listing.contains("3 parked job(s)"), "{listing}");
    }
    let (ok, shown) = snapq_jobs(&topology, &["show", &ids[0]]);
    assert!(
        ok && shown.contains("failure number 0") && shown.contains("fallback-failed"),
        "{shown}"
    );

    // Still there, once each, in order, with every header as parked.
    assert_eq!(rabbit::depth(&topology.parked_queue).await, 3);
    let mgmt = Mgmt::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while mgmt.queue(&topology.parked_queue).await["messages"] != json!(3) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the management API never showed 3 parked messages"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let messages = take_everything(&topology.parked_queue).await;
    assert_eq!(messages.len(), 3, "every job exactly once");
    for (message, (body, headers, id)) in messages.iter().zip(&published) {
        assert_eq!(&message.delivery.data, body, "{id}: body as parked");
        assert_eq!(
            message.delivery.properties.headers().as_ref(),
            Some(headers),
            "{id}: headers as parked, nothing added"
        );
    }

    // Put them back, then purge and replay through the same library as `snapq jobs`.
    for (body, headers, _) in &published {
        publish_confirmed(
            &channel,
            "",
            &topology.parked_queue,
            body,
            oslo_properties().with_headers(headers.clone()),
        )
        .await
        .expect("park again");
    }
    let producer = Producer::connect(&amqp_url, topology.clone())
        .await
        .expect("connect");
    let mut parked = jobs::take_all(producer.channel(), producer.topology())
        .await
        .expect("read the parking lot");
    let middle = parked.remove(1);
    jobs::purge(middle).await.expect("purge");
    let first = parked.remove(0);
    jobs::replay(
        producer.channel(),
        producer.topology(),
        first,
        ReplayMode::Direct,
    )
    .await
    .expect("replay");
    jobs::put_back(parked).await;
    producer.close().await;

    let replayed = rabbit::get_one(&topology.work_queue, Duration::from_secs(10))
        .await
        .expect("the replayed job is in the work queue");
    let state = rabbit::job_state(&replayed);
    assert_eq!(state.job_id.as_deref(), Some(ids[0].as_str()));
    assert_eq!(state.replays, 1);
    assert_eq!(state.reason, None, "a direct replay starts afresh");
    let left = take_everything(&topology.parked_queue).await;
    let left: Vec<_> = left
        .iter()
        .map(|m| rabbit::job_state(m).job_id.expect("job id"))
        .collect();
    assert_eq!(
        left,
        [ids[2].clone()],
        "the purged and replayed jobs are gone"
    );
    clean_up(&topology).await;
}

#[tokio::test]
async fn a_message_rejected_past_the_dead_letter_limit_is_moved_to_the_parking_lot() {
    let topology = test_topology("bsem-dead");
    declare(&topology).await;
    let (_connection, channel) = rabbit::channel().await;
    let (body, headers, id) = parked_job(7, DeadLetterReason::Fallback);
    // As the work consumer dead-letters a job.
    publish_confirmed(
        &channel,
        &topology.dead_letter_exchange,
        &topology.dead_letter_routing_key,
        &body,
        oslo_properties().with_headers(headers.clone()),
    )
    .await
    .expect("dead-letter a job");

    // A dead-letter consumer that rejects it, again and again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut rejects = 0u32;
    loop {
        let got = channel
            .basic_get(
                topology.dead_letter_queue.as_str().into(),
                BasicGetOptions::default(),
            )
            .await
            .expect("basic.get");
        match got {
            Some(message) => {
                assert_eq!(message.delivery.data, body);
                message
                    .delivery
                    .reject(BasicRejectOptions { requeue: true })
                    .await
                    .expect("reject");
                rejects += 1;
            }
            None if rabbit::depth(&topology.parked_queue).await > 0 => break,
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after {rejects} rejects the job is neither in the dead-letter queue nor parked"
        );
        assert!(
            rejects <= DEAD_LETTER_DELIVERY_LIMIT + 1,
            "still delivered after {rejects} rejects: the limit does not apply"
        );
    }
    assert!(
        rejects >= DEAD_LETTER_DELIVERY_LIMIT,
        "moved after only {rejects} rejects (limit {DEAD_LETTER_DELIVERY_LIMIT})"
    );
    assert_eq!(rabbit::depth(&topology.dead_letter_queue).await, 0);

    // `snapq jobs` sees it, says the broker moved it, and keeps it.
    let producer = Producer::connect(&Services::from_env().amqp_url, topology.clone())
        .await
        .expect("connect");
    let parked = jobs::take_all(producer.channel(), producer.topology())
        .await
        .expect("read the parking lot");
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].id(), id);
    assert_eq!(
        parked[0].state.reason.as_deref(),
        Some(format!("{DEAD_LETTER_LIMIT_REASON}:fallback").as_str())
    );
    jobs::put_back(parked).await;
    producer.close().await;

    let moved = take_everything(&topology.parked_queue).await;
    assert_eq!(moved.len(), 1, "parked exactly once");
    let moved = &moved[0];
    assert_eq!(moved.delivery.data, body, "the body as dead-lettered");
    let got = moved
        .delivery
        .properties
        .headers()
        .clone()
        .expect("headers");
    for (key, value) in headers.inner() {
        assert_eq!(got.inner().get(key), Some(value), "header {key} kept");
    }
    let Some(AMQPValue::FieldArray(deaths)) = got.inner().get("x-death") else {
        panic!("no x-death: {got:?}");
    };
    let Some(AMQPValue::FieldTable(last)) = deaths.as_slice().first() else {
        panic!("empty x-death: {got:?}");
    };
    assert_eq!(last.inner().get("reason"), Some(&text("delivery_limit")));
    assert_eq!(
        last.inner().get("queue"),
        Some(&text(&topology.dead_letter_queue))
    );
    clean_up(&topology).await;
}

#[tokio::test]
async fn a_parking_lot_declared_as_a_quorum_queue_is_refused_with_what_to_do() {
    let topology = test_topology("bsem-old");
    // As an older snapq declared it.
    {
        let (_connection, channel) = rabbit::channel().await;
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), text("quorum"));
        channel
            .queue_declare(
                topology.parked_queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                args,
            )
            .await
            .expect("declare the old parking lot");
    }
    let (_connection, channel) = rabbit::channel().await;
    let err = declare_topology(&channel, &topology)
        .await
        .expect_err("a quorum parking lot cannot be redeclared as a classic queue");
    let shown = err.to_string();
    match &err {
        AmqpError::QueueMismatch { queue, .. } => assert_eq!(queue, &topology.parked_queue),
        other => panic!("not a QueueMismatch: {other:?}"),
    }
    for part in [
        "PRECONDITION_FAILED",
        "quorum",
        "classic",
        &format!("rabbitmqctl delete_queue {}", topology.parked_queue),
    ] {
        assert!(shown.contains(part), "{part:?} not in: {shown}");
    }
    // `snapq jobs` says the same and fails.
    let (ok, output) = snapq_jobs(&topology, &["list"]);
    assert!(!ok, "{output}");
    assert!(output.contains("rabbitmqctl delete_queue"), "{output}");

    // The remedy it names works: once the old queue is gone, the topology declares.
    rabbit::delete_queues(&[topology.parked_queue.as_str()]).await;
    declare(&topology).await;
    let seen = Mgmt::new().queue(&topology.parked_queue).await;
    assert_eq!(seen["type"], json!("classic"));
    for queue in topology.all_queues() {
        rabbit::depth(queue).await; // panics if the queue does not exist
    }
    // A message parked now is taken and acknowledged like any other.
    let (_c, channel) = rabbit::channel().await;
    let (body, headers, _) = parked_job(1, DeadLetterReason::Park);
    publish_confirmed(
        &channel,
        "",
        &topology.parked_queue,
        &body,
        oslo_properties().with_headers(headers),
    )
    .await
    .expect("park");
    let got = channel
        .basic_get(
            topology.parked_queue.as_str().into(),
            BasicGetOptions::default(),
        )
        .await
        .expect("basic.get")
        .expect("the parked message");
    got.delivery
        .ack(BasicAckOptions::default())
        .await
        .expect("ack");
    clean_up(&topology).await;
}
