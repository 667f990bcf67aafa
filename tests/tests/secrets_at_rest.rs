//! No secrets at rest: the credentials a caller's request context carries (`_context_auth_token`
//! and any key naming a token, password or secret) never reach a message snapq publishes — its
//! checkpoints, the retry tiers, the dead-letter queue, the parking lot, its replies — nor its
//! logs, and a parked job still replays without them.
//!
//! Real `snapq-worker` processes (work and dead-letter roles) serve four calls, each with
//! secrets of its own: one that succeeds, one for a missing disk (parked), one malformed
//! (parked), one refused (parked). Every queue is read back through the management API without
//! consuming, and two tap queues get a copy of everything routed to the request exchange and to
//! the dead-letter exchange, so that messages the workers take at once are seen too. The only
//! messages allowed to hold the secrets are the four requests as published, in the work queue.
//!
//! The workers log at debug level and publish oslo notifications (scanned too); (a) meets a
//! held lease and goes through the retry tiers, and the parked (b) is replayed into the full
//! copy, so the dead-letter consumer's own republishing is checked as well.

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{json, Map, Value};
use snapq_common::amqp::{declare_topology, Topology, TopologyConfig};
use snapq_common::glance::{GlanceClient, NewImage};
use snapq_common::message::SnapshotRequest;
use snapq_common::rbd::{run_blocking, Pool};
use snapq_tests::disks::{make_disk, MIB};
use snapq_tests::worker_harness::glance_client;
use snapq_tests::worker_process::{binary, WorkerProcess};
use snapq_tests::{cluster_as, rabbit, unique_name, Services};
use uuid::Uuid;

/// The project the dev Glance makes images for (no Keystone: `dev/snapq_noauth.py`).
const DEV_PROJECT: &str = "snapq-dev-project";

/// Context keys whose values are credentials (`_context_<key>` on the wire).
const SECRET_KEYS: [&str; 5] = [
    "auth_token",
    "service_token",
    "user_password",
    "client_secret",
    "ldap_passwd",
];

// ---------------------------------------------------------------------------------------------
// The RabbitMQ management API: reading queues without consuming them.

struct Mgmt {
    http: reqwest::Client,
    url: String,
    user: String,
    password: String,
}

/// One message as the management API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Seen {
    queue: String,
    body: String,
    /// The AMQP properties (headers included) as JSON.
    properties: String,
}

impl Seen {
    fn headers(&self) -> Map<String, Value> {
        serde_json::from_str::<Value>(&self.properties)
            .ok()
            .and_then(|p| p["headers"].as_object().cloned())
            .unwrap_or_default()
    }

    /// No snapq state and no broker dead-lettering: the message as a producer sent it.
    fn has_no_snapq_or_death_headers(&self) -> bool {
        self.headers()
            .keys()
            .all(|k| !k.starts_with("x-snapq") && k != "x-death")
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers().get(name).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
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

    /// Up to 100 ready messages of `queue`; `requeue` puts them back (looking, not taking).
    async fn get(&self, queue: &str, requeue: bool) -> Vec<Seen> {
        let url = format!("{}/api/queues/%2F/{}/get", self.url, percent_encode(queue));
        let ackmode = if requeue {
            "ack_requeue_true"
        } else {
            "ack_requeue_false"
        };
        let response = self
            .http
            .post(&url)
            .basic_auth(&self.user, Some(&self.password))
            .json(&json!({"count": 100, "ackmode": ackmode, "encoding": "auto"}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("management API unreachable: {e}"));
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Vec::new(); // not declared yet
        }
        assert!(
            response.status().is_success(),
            "management API: get {queue}: {}",
            response.status()
        );
        let messages: Vec<Value> = response.json().await.expect("messages as JSON");
        messages
            .into_iter()
            .map(|m| {
                let payload = m["payload"].as_str().unwrap_or("");
                let body = if m["payload_encoding"] == "base64" {
                    String::from_utf8_lossy(&base64_decode(payload)).into_owned()
                } else {
                    payload.to_string()
                };
                Seen {
                    queue: queue.to_string(),
                    body,
                    properties: m["properties"].to_string(),
                }
            })
            .collect()
    }
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

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for v in s.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Requests with secrets.

/// One request: its ids, reply queue and the secret values its context carries.
struct Case {
    label: &'static str,
    unique_id: String,
    reply_queue: String,
    secrets: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Case {
    fn new(label: &'static str, args: Value) -> Case {
        let unique_id = Uuid::new_v4().simple().to_string();
        let reply_queue = format!("reply_{}", Uuid::new_v4().simple());
        let tag = &Uuid::new_v4().simple().to_string()[..12];
        let secrets: Vec<(String, String)> = SECRET_KEYS
            .iter()
            .map(|key| {
                (
                    format!("_context_{key}"),
                    format!("sekrit-{label}-{key}-{tag}"),
                )
            })
            .collect();
        let mut inner = json!({
            "method": "snapshot_instance",
            "args": args,
            "version": "1.0",
            "_msg_id": Uuid::new_v4().simple().to_string(),
            "_reply_q": reply_queue,
            "_timeout": null,
            "_unique_id": unique_id,
            "_context_request_id": format!("req-{}", Uuid::new_v4()),
            "_context_project_id": DEV_PROJECT,
            "_context_user_id": "snapq-secrets-test-user",
            "_context_roles": ["member"],
        });
        for (key, value) in &secrets {
            inner[key] = json!(value);
        }
        let body = serde_json::to_vec(&json!({
            "oslo.version": "2.0",
            "oslo.message": inner.to_string(),
        }))
        .expect("json");
        Case {
            label,
            unique_id,
            reply_queue,
            secrets,
            body,
        }
    }

    fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Secret values found in `text`, with the case and key they belong to.
fn secrets_in<'a>(cases: &'a [Case], text: &str) -> Vec<(&'a str, &'a str)> {
    cases
        .iter()
        .flat_map(|c| c.secrets.iter().map(move |(k, v)| (c.label, k.as_str(), v)))
        .filter(|(_, _, v)| text.contains(v.as_str()))
        .map(|(label, key, _)| (label, key))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Watching every queue.

struct Watch {
    mgmt: Mgmt,
    topology: Topology,
    request_tap: String,
    dead_letter_tap: String,
    reply_queues: Vec<String>,
    /// The oslo notification queues the workers publish to (consumed, like the taps).
    notification_queues: Vec<String>,
    /// Distinct messages seen in the topology's queues (each is looked at many times).
    peeked: HashSet<Seen>,
    /// Latest look at the parking lot.
    parked_now: Vec<Seen>,
    /// Every message the taps and reply queues received, in order (they are consumed).
    taken: Vec<Seen>,
    /// Ready messages in the work, dead-letter and retry queues at the latest look.
    in_flight_now: usize,
}

impl Watch {
    async fn sweep(&mut self) {
        self.in_flight_now = 0;
        for queue in self.topology.all_queues() {
            let seen = self.mgmt.get(queue, true).await;
            if queue == self.topology.parked_queue {
                self.parked_now = seen.clone();
            } else {
                self.in_flight_now += seen.len();
            }
            self.peeked.extend(seen);
        }
        let own: Vec<String> = [&self.request_tap, &self.dead_letter_tap]
            .into_iter()
            .chain(&self.reply_queues)
            .chain(&self.notification_queues)
            .cloned()
            .collect();
        for queue in own {
            let seen = self.mgmt.get(&queue, false).await;
            self.taken.extend(seen);
        }
    }

    fn all_seen(&self) -> impl Iterator<Item = &Seen> {
        self.peeked.iter().chain(&self.taken)
    }

    fn parked(&self, case: &Case) -> Option<&Seen> {
        self.parked_now
            .iter()
            .find(|m| m.body.contains(&case.unique_id))
    }

    /// Messages holding a secret, except the requests as published (no snapq state, no
    /// dead-lettering, byte for byte as sent) in the work queue or the request tap.
    fn violations(&self, cases: &[Case]) -> Vec<String> {
        let sent: Vec<String> = cases.iter().map(Case::body_text).collect();
        self.all_seen()
            .filter(|m| {
                let as_sent = (m.queue == self.topology.work_queue || m.queue == self.request_tap)
                    && sent.contains(&m.body)
                    && m.has_no_snapq_or_death_headers();
                !as_sent
            })
            .filter_map(|m| {
                let found = secrets_in(cases, &format!("{}\n{}", m.body, m.properties));
                (!found.is_empty()).then(|| {
                    format!(
                        "queue {}: {found:?} in a message with headers {}",
                        m.queue,
                        serde_json::to_string(&m.headers()).unwrap_or_default()
                    )
                })
            })
            .collect()
    }
}

/// Deletes queues when dropped, so that a failing test leaves none behind either.
struct QueueJanitor(Vec<String>);

impl Drop for QueueJanitor {
    fn drop(&mut self) {
        let queues = std::mem::take(&mut self.0);
        // Drop cannot await, and may run while the test's runtime unwinds: use a runtime of
        // its own on a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            let queues: Vec<&str> = queues.iter().map(String::as_str).collect();
            runtime.block_on(rabbit::delete_queues(&queues));
        })
        .join();
    }
}

async fn declare_classic(channel: &lapin::Channel, queue: &str) {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("declare {queue}: {e}"));
}

/// Runs `snapq jobs ...` on the topology; returns (success, stdout + stderr).
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

async fn queued_image(glance: &GlanceClient, name: &str) -> Uuid {
    glance
        .create_image(&NewImage::raw(name))
        .await
        .expect("a queued Glance image")
        .id
}

async fn remove_disk(pool: &Pool, name: &str) {
    let (pool, name) = (pool.clone(), name.to_string());
    let _ = run_blocking(move || pool.remove_image(&name)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_context_secrets_never_reach_queues_replies_or_logs_and_parked_jobs_replay() {
    let services = Services::from_env();
    let cluster = cluster_as("nova").await;
    let vms = cluster.pool(&services.nova_pool).expect("nova pool");
    let images = cluster.pool(&services.glance_pool).expect("glance pool");
    let glance = glance_client(&services.glance_url);
    // Reading a quorum queue through the management API returns the message, which counts as
    // a delivery: a high limit keeps the looking from dead-lettering the jobs.
    let topology = Topology::new(TopologyConfig {
        topic: unique_name("secrets"),
        delivery_limit: 1000,
        ..TopologyConfig::default()
    });

    // (a) succeeds, (b) a missing disk named like Nova's (parked, replayed later), (c) malformed
    // (unknown argument), (d) refused (a disk in Glance's pool).
    let disk_a = format!("{}_disk", Uuid::new_v4());
    make_disk(&vms, &disk_a, 64 * MIB, 4).await;
    let image_a = queued_image(&glance, "secrets-a").await;
    let disk_b = format!("{}_disk", Uuid::new_v4());
    let image_b = queued_image(&glance, "secrets-b").await;
    let disk_d = format!("{}_disk", Uuid::new_v4());
    make_disk(&images, &disk_d, 8 * MIB, 1).await;
    let image_d = queued_image(&glance, "secrets-d").await;
    let args = |pool: &str, disk: &str, image: Uuid| {
        json!({
            "disk": format!("{pool}/{disk}"),
            "image_id": image.to_string(),
            "image_name": "secrets",
        })
    };
    let mut malformed = args(&services.nova_pool, &disk_a, Uuid::new_v4());
    malformed["instance_uuid"] = json!(Uuid::new_v4().to_string());
    let cases = [
        Case::new("a", args(&services.nova_pool, &disk_a, image_a)),
        Case::new("b", args(&services.nova_pool, &disk_b, image_b)),
        Case::new("c", malformed),
        Case::new("d", args(&services.glance_pool, &disk_d, image_d)),
    ];

    // The topology, the taps and the callers' reply queues, before anything is published.
    let (_connection, channel) = rabbit::channel().await;
    declare_topology(&channel, &topology)
        .await
        .expect("declare the topology");
    let request_tap = format!("{}.tap.requests", topology.config.topic);
    let dead_letter_tap = format!("{}.tap.dead-letters", topology.config.topic);
    let _janitor = QueueJanitor(
        topology
            .all_queues()
            .into_iter()
            .map(str::to_string)
            .chain([request_tap.clone(), dead_letter_tap.clone()])
            .chain(cases.iter().map(|c| c.reply_queue.clone()))
            .chain(
                ["info", "error"]
                    .iter()
                    .map(|p| format!("{}-notifications.{p}", topology.config.topic)),
            )
            .collect(),
    );
    for (tap, exchange, key) in [
        (
            &request_tap,
            &topology.request_exchange,
            &topology.request_routing_key,
        ),
        (
            &dead_letter_tap,
            &topology.dead_letter_exchange,
            &topology.dead_letter_routing_key,
        ),
    ] {
        declare_classic(&channel, tap).await;
        channel
            .queue_bind(
                tap.as_str().into(),
                exchange.as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind a tap");
    }
    for case in &cases {
        declare_classic(&channel, &case.reply_queue).await;
    }
    // Notifications on (oslo's messagingv2 format), to a topic of this test's own.
    let notification_topic = format!("{}-notifications", topology.config.topic);
    let notification_queues: Vec<String> = ["info", "error"]
        .iter()
        .map(|priority| format!("{notification_topic}.{priority}"))
        .collect();
    let mut watch = Watch {
        mgmt: Mgmt::new(),
        topology: topology.clone(),
        request_tap: request_tap.clone(),
        dead_letter_tap: dead_letter_tap.clone(),
        reply_queues: cases.iter().map(|c| c.reply_queue.clone()).collect(),
        notification_queues: notification_queues.clone(),
        peeked: HashSet::new(),
        parked_now: Vec::new(),
        taken: Vec::new(),
        in_flight_now: 0,
    };

    // Debug logging, as an operator chasing a problem would turn on; notifications on.
    let worker_env = |role: &'static str| {
        vec![
            ("SNAPQ_ROLE", role),
            ("RUST_LOG", "debug,lapin=warn"),
            ("SNAPQ_NOTIFICATION_DRIVER", "messagingv2"),
            ("SNAPQ_NOTIFICATION_TOPICS", notification_topic.as_str()),
        ]
    };
    let mut work = WorkerProcess::spawn_with(&topology, "work", &worker_env("work"));
    let mut dead_letter =
        WorkerProcess::spawn_with(&topology, "dead-letter", &worker_env("dead-letter"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // (a)'s lease is held for a while, as by a duplicate at work: (a) goes through the retry
    // tiers, which must not keep its secrets either.
    let held = snapq_worker::lease::JobLease::acquire(
        &vms,
        image_a,
        ("a-duplicate", &format!("{}/{disk_a}", services.nova_pool)),
        "secrets-test",
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|e| panic!("hold (a)'s lease: {e:?}"));
    for case in &cases {
        rabbit::publish_raw(&channel, &topology, &case.body).await;
    }
    let hold_until = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < hold_until {
        watch.sweep().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    held.release(snapq_worker::lease::Release::Continue).await;

    // Watch until (a) is active and (b), (c), (d) are parked, with nothing else in flight.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        watch.sweep().await;
        let a_active = glance.get_image(image_a).await.expect("image a").status == "active";
        let all_parked = cases[1..].iter().all(|c| watch.parked(c).is_some());
        if a_active && all_parked && watch.in_flight_now == 0 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let parked: Vec<_> = cases
                .iter()
                .map(|c| (c.label, watch.parked(c).map(|m| m.header("x-snapq-reason"))))
                .collect();
            panic!(
                "the jobs did not settle: (a) active: {a_active}; parked (case, reason): \
                 {parked:?}; {} messages in flight; violations so far: {:#?}",
                watch.in_flight_now,
                watch.violations(&cases)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    watch.sweep().await; // late replies
    for case in &cases {
        println!(
            "({}) parked with reason {:?}",
            case.label,
            watch.parked(case).map(|m| m.header("x-snapq-reason"))
        );
    }

    // The taps saw each request as sent exactly once (they work, and nothing republished a
    // request unchanged); replies arrived.
    for case in &cases {
        let copies = watch
            .taken
            .iter()
            .filter(|m| m.queue == request_tap && m.body == case.body_text())
            .count();
        assert_eq!(
            copies, 1,
            "({}) the request as sent reached the request exchange {copies} times",
            case.label
        );
    }
    // The scan is not blind: the secrets are found in the requests as sent (as the management
    // API shows them), and it saw snapq's own copies: (a)'s checkpoints, and (b), (c), (d) in
    // the parking lot.
    for case in &cases {
        let original = watch
            .taken
            .iter()
            .find(|m| m.queue == request_tap && m.body == case.body_text())
            .expect("the request as sent");
        assert_eq!(
            secrets_in(&cases, &original.body).len(),
            SECRET_KEYS.len(),
            "({}) the scan cannot see the secrets in the request as sent",
            case.label
        );
    }
    let checkpoints_a = watch
        .all_seen()
        .filter(|m| m.body.contains(&cases[0].unique_id) && !m.has_no_snapq_or_death_headers())
        .count();
    assert!(
        checkpoints_a >= 1,
        "the scan saw none of (a)'s checkpoints: nothing was checked"
    );
    let retry_queues: Vec<&str> = topology
        .retry_queues
        .iter()
        .map(|q| q.name.as_str())
        .collect();
    assert!(
        watch
            .all_seen()
            .any(|m| retry_queues.contains(&m.queue.as_str())
                && m.body.contains(&cases[0].unique_id)),
        "the scan saw (a) in no retry queue: the retry tiers were not checked"
    );
    assert!(
        watch.taken.iter().any(
            |m| notification_queues.contains(&m.queue) && m.body.contains("snapq.snapshot.end")
        ),
        "the scan saw no end notification: notifications were not checked"
    );
    let mut per_queue: std::collections::BTreeMap<&str, usize> = Default::default();
    for m in watch.all_seen() {
        *per_queue.entry(m.queue.as_str()).or_default() += 1;
    }
    println!("distinct messages scanned, per queue: {per_queue:?}");

    let replies: Vec<&Seen> = watch
        .taken
        .iter()
        .filter(|m| m.queue.starts_with("reply_"))
        .collect();
    println!("{} replies received", replies.len());
    assert!(
        replies.iter().any(|m| m.queue == cases[0].reply_queue),
        "(a) was answered"
    );
    let violations = watch.violations(&cases);
    assert!(
        violations.is_empty(),
        "secrets at rest in messages snapq published:\n{}",
        violations.join("\n")
    );

    // The parked job (b) still decodes and replays once its disk exists, still without secrets.
    let parked_b = watch.parked(&cases[1]).expect("(b) is parked").clone();
    let request_b = SnapshotRequest::decode(parked_b.body.as_bytes())
        .unwrap_or_else(|e| panic!("(b) as parked no longer decodes: {e}: {}", parked_b.body));
    assert_eq!(request_b.unique_id, cases[1].unique_id);
    assert_eq!(request_b.image_id, image_b);
    assert_eq!(request_b.disk.image, disk_b);
    assert!(
        request_b.reply.is_some(),
        "(b) as parked lost its reply address"
    );
    assert_eq!(
        request_b.context.get("project_id").and_then(Value::as_str),
        Some(DEV_PROJECT),
        "(b) as parked kept the non-secret context"
    );
    make_disk(&vms, &disk_b, 16 * MIB, 1).await;
    let (ok, shown) = snapq_jobs(&topology, &["show", &cases[1].unique_id]);
    assert!(ok, "snapq jobs show: {shown}");
    // Replayed into the full copy: the dead-letter consumer's pass must keep no secret either.
    let (ok, replayed) = snapq_jobs(
        &topology,
        &["replay", "--mode", "fallback", &cases[1].unique_id],
    );
    assert!(ok, "snapq jobs replay: {replayed}");
    for (what, text) in [("jobs show", &shown), ("jobs replay", &replayed)] {
        let found = secrets_in(&cases, text);
        assert!(found.is_empty(), "snapq {what} printed secrets {found:?}");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        watch.sweep().await;
        let b_active = glance.get_image(image_b).await.expect("image b").status == "active";
        if b_active && watch.in_flight_now == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replayed job (b) did not make its image active"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    watch.sweep().await;
    let replayed_copies = watch
        .taken
        .iter()
        .filter(|m| {
            m.queue == dead_letter_tap
                && m.body.contains(&cases[1].unique_id)
                && m.header("x-snapq-replays").is_some()
        })
        .count();
    assert!(
        replayed_copies >= 1,
        "the replayed (b) went through the dead-letter exchange, to the full copy"
    );
    let violations = watch.violations(&cases);
    assert!(
        violations.is_empty(),
        "secrets at rest after the replay:\n{}",
        violations.join("\n")
    );

    // The workers' logs.
    assert!(work.terminate(Duration::from_secs(60)).await.success());
    assert!(dead_letter
        .terminate(Duration::from_secs(60))
        .await
        .success());
    assert!(
        dead_letter.log_text().contains("full copy done"),
        "(b) was not made by the full copy: {}",
        dead_letter.log.display()
    );
    for (worker, handled) in [(&work, &cases[0]), (&dead_letter, &cases[1])] {
        let log = worker.log_text();
        assert!(
            log.contains("DEBUG"),
            "{} was not logging at debug level",
            worker.log.display()
        );
        assert!(
            log.contains(&handled.unique_id),
            "{} does not show job ({})",
            worker.log.display(),
            handled.label
        );
        let found = secrets_in(&cases, &log);
        assert!(
            found.is_empty(),
            "secrets {found:?} in {}",
            worker.log.display()
        );
    }
    println!(
        "worker logs: {} and {}",
        work.log.display(),
        dead_letter.log.display()
    );

    for image in [image_a, image_b, image_d] {
        glance.delete_image(image).await.expect("delete image");
    }
    remove_disk(&vms, &disk_a).await;
    remove_disk(&vms, &disk_b).await;
    remove_disk(&images, &disk_d).await;
    let mut queues = topology.all_queues();
    queues.extend([request_tap.as_str(), dead_letter_tap.as_str()]);
    queues.extend(cases.iter().map(|c| c.reply_queue.as_str()));
    rabbit::delete_queues(&queues).await;
}
