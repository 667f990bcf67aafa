//! snapq as the real oslo.messaging RPC client sees it: every `call` is answered promptly in
//! oslo's remote-error format (or with the result), and every request snapq cannot or will not
//! serve is parked with its reason, leaving Ceph and Glance as they were.
//!
//! The client is PyPI oslo.messaging (`tests/oslo/rpc_client.py`, run with the Python named by
//! `SNAPQ_OSLO_PYTHON`, the Glance venv's). Calls use a 10 s timeout: a request left unanswered
//! shows as `MessagingTimeout`, which every test rules out before anything else.

use std::path::PathBuf;
use std::time::Duration;

use lapin::message::BasicGetMessage;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{json, Value};
use snapq_common::amqp::Topology;
use snapq_common::glance::{GlanceClient, ImageRecord, NewImage};
use snapq_common::rbd::{run_blocking, Pool};
use snapq_tests::disks::{leftovers, make_disk, MIB};
use snapq_tests::worker_harness::{glance_client, test_topology, RunningWorker};
use snapq_tests::{cluster_as, rabbit, setting, unique_name, Services};
use snapq_worker::Role;
use uuid::Uuid;

/// Long enough to tell "no answer" (MessagingTimeout) from a slow one; far above the answer
/// time the contract asks for.
const CALL_TIMEOUT_SECONDS: f64 = 10.0;
/// The contract: an answer well within 1 s of the request being read.
const PROMPT_SECONDS: f64 = 1.0;
/// A real snapshot (64 MiB disk) takes a few seconds.
const SNAPSHOT_TIMEOUT_SECONDS: f64 = 120.0;
/// The project the dev Glance (no Keystone, `dev/snapq_noauth.py`) makes images for.
const DEV_PROJECT: &str = "snapq-dev-project";
/// Both modules snapq's failures come from, so the client re-raises them and the module on the
/// wire can be checked (otherwise oslo wraps them in `RemoteError`, which keeps only the class).
const ALLOWED_EXMODS: [&str; 2] = ["oslo_messaging.rpc.dispatcher", "snapq.exceptions"];

// ---------------------------------------------------------------------------------------------
// The oslo.messaging client.

/// One invocation of the real oslo RPC client.
struct OsloRequest<'a> {
    topic: &'a str,
    method: &'a str,
    version: &'a str,
    timeout_seconds: f64,
    kwargs: Value,
    context: Value,
    cast: bool,
    allowed_exmods: &'a [&'a str],
    /// Aim at `topic.<server>`, as `client.prepare(server=...)` does.
    server: Option<&'a str>,
}

impl<'a> OsloRequest<'a> {
    /// A `call` of `method` at version 1.0 with the dev project's context.
    fn call(topic: &'a str, method: &'a str, kwargs: Value) -> OsloRequest<'a> {
        OsloRequest {
            topic,
            method,
            version: "1.0",
            timeout_seconds: CALL_TIMEOUT_SECONDS,
            kwargs,
            context: context_of(DEV_PROJECT),
            cast: false,
            allowed_exmods: &ALLOWED_EXMODS,
            server: None,
        }
    }
}

/// A request context as oslo.context's `to_dict()` has it (flattened to `_context_*`).
fn context_of(project_id: &str) -> Value {
    json!({
        "request_id": format!("req-{}", Uuid::new_v4()),
        "project_id": project_id,
        "user_id": "snapq-oslo-test-user",
        "roles": ["member"],
    })
}

/// What the client printed: `{"ok", "result" | "exc_type", "value", "python_class", "module",
/// "seconds", "reply_q"}`.
#[derive(Debug)]
struct OsloOutcome(Value);

impl OsloOutcome {
    fn ok(&self) -> bool {
        self.0["ok"].as_bool().unwrap_or(false)
    }
    fn exc_type(&self) -> &str {
        self.0["exc_type"].as_str().unwrap_or("")
    }
    fn value(&self) -> &str {
        self.0["value"].as_str().unwrap_or("")
    }
    fn module(&self) -> Option<&str> {
        self.0["module"].as_str()
    }
    fn seconds(&self) -> f64 {
        self.0["seconds"].as_f64().unwrap_or(f64::NAN)
    }
    fn result(&self) -> &Value {
        &self.0["result"]
    }
}

fn rpc_client_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oslo/rpc_client.py")
}

/// Runs the oslo client once and returns what it printed. The broker URL goes through the
/// environment, never argv. The reply queue oslo declared is deleted afterwards.
async fn oslo(label: &str, request: &OsloRequest<'_>) -> OsloOutcome {
    let python = setting("SNAPQ_OSLO_PYTHON");
    let mut command = tokio::process::Command::new(&python);
    command
        .arg(rpc_client_script())
        .args(["--topic", request.topic])
        .args(["--method", request.method])
        .args(["--version", request.version])
        .args(["--timeout", &request.timeout_seconds.to_string()])
        .args(["--kwargs", &request.kwargs.to_string()])
        .args(["--context", &request.context.to_string()])
        .args(["--allowed-exmods", &request.allowed_exmods.join(",")])
        .env("SNAPQ_AMQP_URL", Services::from_env().amqp_url)
        .kill_on_drop(true);
    if request.cast {
        command.arg("--cast");
    }
    if let Some(server) = request.server {
        command.args(["--server", server]);
    }
    let output = tokio::time::timeout(
        Duration::from_secs_f64(request.timeout_seconds + 60.0),
        command.output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{label}: the oslo client did not finish"))
    .unwrap_or_else(|e| panic!("{label}: cannot run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let value: Value = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "{label}: the oslo client printed no JSON line ({e}; exit {:?})\nstdout: {stdout}\nstderr: {stderr}",
            output.status
        )
    });
    if let Some(reply_q) = value["reply_q"].as_str() {
        rabbit::delete_queues(&[reply_q]).await;
    }
    let outcome = OsloOutcome(value);
    println!(
        "{label}: answered in {:.3} s (set-up {:.3} s): {}",
        outcome.seconds(),
        outcome.0["setup_seconds"].as_f64().unwrap_or(f64::NAN),
        outcome.0
    );
    outcome
}

/// The call was answered (no MessagingTimeout) within [`PROMPT_SECONDS`] with the remote
/// exception `class` from `module`; returns its message.
fn assert_remote_failure(label: &str, outcome: &OsloOutcome, class: &str, module: &str) -> String {
    assert!(
        !outcome.ok(),
        "{label}: the call succeeded: {:?}",
        outcome.result()
    );
    assert_ne!(
        outcome.exc_type(),
        "MessagingTimeout",
        "{label}: the worker never answered the call: {}",
        outcome.0
    );
    assert_eq!(
        outcome.exc_type(),
        class,
        "{label}: wrong remote exception: {}",
        outcome.0
    );
    assert_eq!(
        outcome.module(),
        Some(module),
        "{label}: the failure's module on the wire is not {module} (oslo could not re-raise it \
         from the allowed modules {ALLOWED_EXMODS:?}): {}",
        outcome.0
    );
    assert_answered_promptly(label, outcome);
    outcome.value().to_string()
}

fn assert_answered_promptly(label: &str, outcome: &OsloOutcome) {
    assert!(
        outcome.seconds() < PROMPT_SECONDS,
        "{label}: answered after {:.3} s, not within {PROMPT_SECONDS} s",
        outcome.seconds()
    );
}

fn assert_mentions(label: &str, text: &str, words: &[&str]) {
    for word in words {
        assert!(
            text.contains(word),
            "{label}: {text:?} does not mention {word:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The world of one test: a topic of its own, a work worker and a dead-letter consumer.

struct World {
    services: Services,
    topology: Topology,
    work: RunningWorker,
    dead_letter: RunningWorker,
    glance: GlanceClient,
    vms: Pool,
    images: Pool,
    _janitor: QueueJanitor,
}

impl World {
    async fn start(prefix: &str) -> World {
        let services = Services::from_env();
        let topology = test_topology(prefix);
        let janitor = QueueJanitor(
            topology
                .all_queues()
                .into_iter()
                .map(str::to_string)
                .collect(),
        );
        let work = RunningWorker::start_as(topology.clone(), "nova", Role::Work).await;
        let dead_letter = RunningWorker::start_as(topology.clone(), "nova", Role::DeadLetter).await;
        let cluster = cluster_as("nova").await;
        World {
            vms: cluster.pool(&services.nova_pool).expect("nova pool"),
            images: cluster.pool(&services.glance_pool).expect("glance pool"),
            glance: glance_client(&services.glance_url),
            services,
            topology,
            work,
            dead_letter,
            _janitor: janitor,
        }
    }

    fn topic(&self) -> &str {
        &self.topology.config.topic
    }

    /// A real instance disk `<pool>/<name>` (16 MiB, one 4 MiB extent written).
    async fn disk(&self, pool: &Pool, name: &str) {
        make_disk(pool, name, 16 * MIB, 1).await;
    }

    async fn queued_image(&self, name: &str) -> ImageRecord {
        let image = self
            .glance
            .create_image(&NewImage::raw(name))
            .await
            .expect("a queued Glance image");
        assert_eq!(image.status, "queued");
        image
    }

    /// The next parked message: it must carry `x-snapq-reason: reason`.
    async fn expect_parked(&self, label: &str, reason: &str) -> BasicGetMessage {
        let parked = rabbit::get_one(&self.topology.parked_queue, Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("{label}: nothing was parked"));
        assert_eq!(
            header_text(&parked, "x-snapq-reason").as_deref(),
            Some(reason),
            "{label}: parked with the wrong reason; headers: {:?}",
            parked.delivery.properties.headers()
        );
        parked
    }

    /// Only the parking lot was used: every other queue of the topology is empty.
    async fn assert_nothing_elsewhere(&self, label: &str) {
        for queue in self.topology.all_queues() {
            if queue != self.topology.parked_queue {
                assert_eq!(
                    rabbit::depth(queue).await,
                    0,
                    "{label}: queue {queue} holds messages"
                );
            }
        }
    }

    /// Ceph holds nothing for `image_id` and no snapshot of `pool/disk` was taken or left.
    async fn assert_ceph_untouched(&self, label: &str, pool: &Pool, disk: &str, image_id: Uuid) {
        let (clone_exists, snapshots) = leftovers(&self.images, pool, image_id, disk).await;
        assert!(!clone_exists, "{label}: images/{image_id} was created");
        assert!(
            snapshots.is_empty(),
            "{label}: snapshots on {disk}: {snapshots:?}"
        );
    }

    async fn assert_image_status(&self, label: &str, image_id: Uuid, status: &str) {
        let record = self.glance.get_image(image_id).await.expect("image");
        assert_eq!(
            record.status, status,
            "{label}: the Glance image's status changed"
        );
    }

    async fn remove_disk(&self, pool: &Pool, name: &str) {
        let (pool, name) = (pool.clone(), name.to_string());
        run_blocking(move || pool.remove_image(&name))
            .await
            .expect("remove the test disk");
    }

    async fn delete_image(&self, id: Uuid) {
        self.glance.delete_image(id).await.expect("delete image");
    }

    async fn finish(self) {
        self.work.stop().await;
        self.dead_letter.stop().await;
        rabbit::delete_queues(&self.topology.all_queues()).await;
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

fn header_text(message: &BasicGetMessage, name: &str) -> Option<String> {
    let headers = message.delivery.properties.headers().as_ref()?;
    Some(match headers.inner().get(name)? {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_string(),
        other => format!("{other:?}"),
    })
}

fn nova_disk_name() -> String {
    format!("{}_disk", Uuid::new_v4())
}

/// Valid-looking arguments for a disk and image that need not exist.
fn some_args() -> Value {
    json!({
        "disk": format!("vms/{}", nova_disk_name()),
        "image_id": Uuid::new_v4().to_string(),
        "image_name": "oslo-test",
    })
}

// ---------------------------------------------------------------------------------------------
// Requests snapq cannot serve: answered at once, parked as malformed.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oslo_call_with_unknown_method_gets_no_such_method() {
    let world = World::start("oslo-nomethod").await;

    // As most services call: snapq's modules not allowed, so oslo raises a RemoteError.
    let mut plain = OsloRequest::call(world.topic(), "drop_tables", json!({}));
    plain.allowed_exmods = &[];
    let outcome = oslo("unknown method, RemoteError", &plain).await;
    assert!(!outcome.ok(), "the call succeeded: {:?}", outcome.result());
    assert_ne!(
        outcome.exc_type(),
        "MessagingTimeout",
        "the worker never answered: {}",
        outcome.0
    );
    assert_eq!(outcome.exc_type(), "NoSuchMethod", "{}", outcome.0);
    assert_eq!(
        outcome.0["python_class"], "oslo_messaging.rpc.client.RemoteError",
        "{}",
        outcome.0
    );
    assert_mentions("unknown method", outcome.value(), &["drop_tables"]);
    assert_answered_promptly("unknown method", &outcome);
    let parked = world.expect_parked("unknown method", "malformed").await;
    let error = header_text(&parked, "x-snapq-last-error").unwrap_or_default();
    assert_mentions("unknown method, parked", &error, &["drop_tables"]);

    // With oslo's dispatcher module allowed, the client re-raises NoSuchMethod itself.
    let allowed = OsloRequest::call(world.topic(), "drop_tables", json!({}));
    let outcome = oslo("unknown method, re-raised", &allowed).await;
    let message = assert_remote_failure(
        "unknown method, re-raised",
        &outcome,
        "NoSuchMethod",
        "oslo_messaging.rpc.dispatcher",
    );
    assert_mentions("unknown method, re-raised", &message, &["drop_tables"]);
    world
        .expect_parked("unknown method, re-raised", "malformed")
        .await;

    world.assert_nothing_elsewhere("unknown method").await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oslo_call_with_incompatible_version_gets_unsupported_version() {
    let world = World::start("oslo-version").await;
    // snapq implements 1.0: another major, or a newer minor, is not compatible (oslo's rule).
    for version in ["2.0", "1.5"] {
        let label = format!("version {version}");
        let mut request = OsloRequest::call(world.topic(), "snapshot_instance", some_args());
        request.version = version;
        let outcome = oslo(&label, &request).await;
        let message = assert_remote_failure(
            &label,
            &outcome,
            "UnsupportedVersion",
            "oslo_messaging.rpc.dispatcher",
        );
        assert_mentions(&label, &message, &[version]);
        world.expect_parked(&label, "malformed").await;
    }
    world.assert_nothing_elsewhere("incompatible version").await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oslo_call_with_invalid_disk_gets_invalid_request_naming_the_field() {
    let world = World::start("oslo-baddisk").await;
    let mut args = some_args();
    args["disk"] = json!("vms/a@b");
    let request = OsloRequest::call(world.topic(), "snapshot_instance", args);
    let outcome = oslo("disk vms/a@b", &request).await;
    let message = assert_remote_failure(
        "disk vms/a@b",
        &outcome,
        "InvalidRequest",
        "snapq.exceptions",
    );
    assert_mentions("disk vms/a@b", &message, &["args.disk"]);
    let parked = world.expect_parked("disk vms/a@b", "malformed").await;
    let error = header_text(&parked, "x-snapq-last-error").unwrap_or_default();
    assert_mentions("disk vms/a@b, parked", &error, &["args.disk"]);
    world.assert_nothing_elsewhere("disk vms/a@b").await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oslo_call_with_a_missing_or_unknown_argument_gets_invalid_request_naming_it() {
    let world = World::start("oslo-badargs").await;
    let mut missing_name = some_args();
    missing_name
        .as_object_mut()
        .expect("object")
        .remove("image_name");
    let mut unknown_arg = some_args();
    // What an older client (see the captured wire vectors) sends.
    unknown_arg["instance_uuid"] = json!(Uuid::new_v4().to_string());
    for (label, args, field) in [
        ("missing image_name", missing_name, "args.image_name"),
        (
            "unknown argument instance_uuid",
            unknown_arg,
            "instance_uuid",
        ),
    ] {
        let request = OsloRequest::call(world.topic(), "snapshot_instance", args);
        let outcome = oslo(label, &request).await;
        let message = assert_remote_failure(label, &outcome, "InvalidRequest", "snapq.exceptions");
        assert_mentions(label, &message, &[field]);
        let parked = world.expect_parked(label, "malformed").await;
        let error = header_text(&parked, "x-snapq-last-error").unwrap_or_default();
        assert_mentions(label, &error, &[field]);
    }
    world.assert_nothing_elsewhere("bad arguments").await;
    world.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Requests policy refuses: answered at once, parked as refused, nothing made in Ceph or Glance.

/// Calls for `pool/disk` into a fresh queued image with `context`, and checks the refusal.
/// Returns the image (still queued) for clean-up.
async fn assert_refused(
    world: &World,
    label: &str,
    pool: &Pool,
    pool_name: &str,
    disk: &str,
    context: Value,
    mentions: &[&str],
) -> ImageRecord {
    let image = world.queued_image(label).await;
    let mut request = OsloRequest::call(
        world.topic(),
        "snapshot_instance",
        json!({
            "disk": format!("{pool_name}/{disk}"),
            "image_id": image.id.to_string(),
            "image_name": label,
        }),
    );
    request.context = context;
    let outcome = oslo(label, &request).await;
    let message = assert_remote_failure(label, &outcome, "SnapshotRefused", "snapq.exceptions");
    assert_mentions(label, &message, &["refusing"]);
    assert_mentions(label, &message, mentions);
    world.expect_parked(label, "refused").await;
    world.assert_nothing_elsewhere(label).await;
    world
        .assert_ceph_untouched(label, pool, disk, image.id)
        .await;
    world.assert_image_status(label, image.id, "queued").await;
    image
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oslo_call_for_a_disk_outside_the_allowed_pools_is_refused_and_creates_nothing() {
    let world = World::start("oslo-pool").await;
    // A real image in Glance's own pool, named like a Nova disk: only the pool is wrong.
    let disk = nova_disk_name();
    world.disk(&world.images, &disk).await;
    let glance_pool = world.services.glance_pool.clone();
    let image = assert_refused(
        &world,
        "disk in Glance's pool",
        &world.images,
        &glance_pool,
        &disk,
        context_of(DEV_PROJECT),
        &["args.disk", &glance_pool],
    )
    .await;
    world.delete_image(image.id).await;
    world.remove_disk(&world.images, &disk).await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oslo_call_for_a_disk_not_named_like_a_nova_disk_is_refused() {
    let world = World::start("oslo-name").await;
    // A real image in Nova's pool that is not an instance disk (a Cinder-style name).
    let disk = unique_name("volume");
    world.disk(&world.vms, &disk).await;
    let nova_pool = world.services.nova_pool.clone();
    let image = assert_refused(
        &world,
        "disk not named <uuid>_disk",
        &world.vms,
        &nova_pool,
        &disk,
        context_of(DEV_PROJECT),
        &["args.disk"],
    )
    .await;
    world.delete_image(image.id).await;
    world.remove_disk(&world.vms, &disk).await;
    world.finish().await;
}

/// The image's `owner`, read straight from Glance (snapq's record type does not carry it).
async fn glance_owner(world: &World, id: Uuid) -> Option<String> {
    let url = format!("{}/v2/images/{id}", world.services.glance_url);
    let body: Value = reqwest::get(&url)
        .await
        .expect("GET the image")
        .json()
        .await
        .expect("the image as JSON");
    body["owner"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oslo_call_for_another_projects_image_is_refused() {
    let world = World::start("oslo-project").await;
    let disk = nova_disk_name();
    world.disk(&world.vms, &disk).await;
    let nova_pool = world.services.nova_pool.clone();
    // The precondition: the dev Glance's images belong to the dev project.
    let probe = world.queued_image("owner probe").await;
    assert_eq!(
        glance_owner(&world, probe.id).await.as_deref(),
        Some(DEV_PROJECT)
    );
    world.delete_image(probe.id).await;

    let image = assert_refused(
        &world,
        "another project's image",
        &world.vms,
        &nova_pool,
        &disk,
        context_of("someone-elses-project"),
        &["project"],
    )
    .await;
    world.delete_image(image.id).await;
    world.remove_disk(&world.vms, &disk).await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oslo_call_for_an_active_image_is_refused_and_changes_nothing() {
    let world = World::start("oslo-active").await;
    let disk = nova_disk_name();
    world.disk(&world.vms, &disk).await;
    // An image that is already active, its data in another RBD image (as when an image was
    // registered by location), so `images/<image_id>` does not exist: only the image's status
    // can make the worker refuse, not what it would find in Ceph.
    let scratch = unique_name("snapq-test-scratch");
    world.disk(&world.images, &scratch).await;
    let (images, name) = (world.images.clone(), scratch.clone());
    run_blocking(move || {
        let mut image = images.open(&name)?;
        image.create_snap("snap")?;
        image.protect_snap("snap")
    })
    .await
    .expect("snapshot the scratch image");
    let image = world.queued_image("already active").await;
    let fsid = cluster_as("nova").await.fsid().to_string();
    let location = format!("rbd://{fsid}/{}/{scratch}/snap", world.services.glance_pool);
    world
        .glance
        .add_location(image.id, &location)
        .await
        .expect("register the scratch image's data");
    let before = world
        .glance
        .wait_active(
            image.id,
            Duration::from_secs(60),
            Duration::from_millis(200),
        )
        .await
        .expect("the image becomes active");

    let label = "image already active";
    let request = OsloRequest::call(
        world.topic(),
        "snapshot_instance",
        json!({
            "disk": format!("{}/{disk}", world.services.nova_pool),
            "image_id": image.id.to_string(),
            "image_name": label,
        }),
    );
    let outcome = oslo(label, &request).await;
    let message = assert_remote_failure(label, &outcome, "SnapshotRefused", "snapq.exceptions");
    // Its data being someone else's is as good a reason as its status.
    assert_mentions(label, &message, &["refusing"]);
    world.expect_parked(label, "refused").await;
    world.assert_nothing_elsewhere(label).await;

    // Nothing changed: no snapshot of the disk, no images/<image_id>, the record as it was.
    world
        .assert_ceph_untouched(label, &world.vms, &disk, image.id)
        .await;
    let after = world.glance.get_image(image.id).await.expect("image");
    assert_eq!(after.status, "active");
    assert_eq!(after.direct_url, before.direct_url, "same location");
    assert_eq!(after.size, before.size, "same data");

    // Glance removes the location's data (the scratch image) with the image.
    world.delete_image(image.id).await;
    let (images, name) = (world.images.clone(), scratch.clone());
    let _ = run_blocking(move || {
        if images.image_exists(&name)? {
            let mut image = images.open(&name)?;
            let _ = image.unprotect_snap("snap");
            let _ = image.remove_snap("snap");
            images.remove_image(&name)?;
        }
        Ok(())
    })
    .await;
    world.remove_disk(&world.vms, &disk).await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oslo_call_for_an_image_being_uploaded_is_refused_naming_its_status() {
    let world = World::start("oslo-uploading").await;
    let disk = nova_disk_name();
    world.disk(&world.vms, &disk).await;
    // Data staged for an import (`PUT /stage`): the image is `uploading`, has no location and
    // nothing in Ceph, so its status is the only reason to refuse it.
    let image = world.queued_image("being uploaded").await;
    let url = format!("{}/v2/images/{}/stage", world.services.glance_url, image.id);
    let staged = reqwest::Client::new()
        .put(&url)
        .header("Content-Type", "application/octet-stream")
        .body(vec![0u8; 4096])
        .send()
        .await
        .expect("stage data");
    assert!(staged.status().is_success(), "stage: {}", staged.status());
    world
        .assert_image_status("precondition", image.id, "uploading")
        .await;

    let label = "image being uploaded";
    let request = OsloRequest::call(
        world.topic(),
        "snapshot_instance",
        json!({
            "disk": format!("{}/{disk}", world.services.nova_pool),
            "image_id": image.id.to_string(),
            "image_name": label,
        }),
    );
    let outcome = oslo(label, &request).await;
    let message = assert_remote_failure(label, &outcome, "SnapshotRefused", "snapq.exceptions");
    assert_mentions(label, &message, &["refusing"]);
    assert!(
        message.contains("uploading") || message.contains("queued"),
        "{label}: {message:?} does not name the image's status"
    );
    world.expect_parked(label, "refused").await;
    world.assert_nothing_elsewhere(label).await;
    world
        .assert_ceph_untouched(label, &world.vms, &disk, image.id)
        .await;
    world
        .assert_image_status(label, image.id, "uploading")
        .await;

    world.delete_image(image.id).await;
    world.remove_disk(&world.vms, &disk).await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oslo_call_for_nova_local_and_ephemeral_disk_names_passes_the_name_policy() {
    let world = World::start("oslo-ephemeral").await;
    // Disks that do not exist: the answer must be about the missing disk, not a refusal.
    for suffix in [".local", ".eph0"] {
        let disk = format!("{}{suffix}", nova_disk_name());
        let label = format!("disk {disk}");
        let image = world.queued_image(&label).await;
        let request = OsloRequest::call(
            world.topic(),
            "snapshot_instance",
            json!({
                "disk": format!("{}/{disk}", world.services.nova_pool),
                "image_id": image.id.to_string(),
                "image_name": label,
            }),
        );
        let outcome = oslo(&label, &request).await;
        assert!(!outcome.ok(), "{label}: the call succeeded");
        assert_ne!(
            outcome.exc_type(),
            "MessagingTimeout",
            "{label}: never answered"
        );
        for refusal in ["SnapshotRefused", "InvalidRequest"] {
            assert_ne!(
                outcome.exc_type(),
                refusal,
                "{label}: the name was not accepted: {}",
                outcome.0
            );
        }
        assert_mentions(&label, outcome.value(), &[&disk]);
        world.expect_parked(&label, "park").await;
        world.delete_image(image.id).await;
    }
    world.finish().await;
}

// ---------------------------------------------------------------------------------------------
// `_reply_q` is where the worker publishes: only oslo's own shape is accepted.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_call_with_a_reply_queue_not_shaped_like_oslos_is_parked_and_answered_nowhere() {
    let world = World::start("oslo-replyq").await;
    let (_connection, channel) = rabbit::channel().await;
    // Queues a misdirected reply would land in (a reply to `amq.gen-*` cannot be observed: the
    // name is reserved, so no client can declare it).
    let victim = unique_name("victim-queue");
    let traversal = "reply_../x".to_string();
    let _janitor = QueueJanitor(vec![victim.clone(), traversal.clone()]);
    for queue in [&victim, &traversal] {
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("declare a queue a misdirected reply would reach");
    }

    for reply_q in [traversal.as_str(), "amq.gen-x", victim.as_str()] {
        let label = format!("_reply_q {reply_q:?}");
        let inner = json!({
            "method": "snapshot_instance",
            "args": some_args(),
            "version": "1.0",
            "_msg_id": Uuid::new_v4().simple().to_string(),
            "_reply_q": reply_q,
            "_timeout": null,
            "_unique_id": Uuid::new_v4().simple().to_string(),
            "_context_request_id": format!("req-{}", Uuid::new_v4()),
            "_context_project_id": DEV_PROJECT,
        });
        let body = serde_json::to_vec(&json!({
            "oslo.version": "2.0",
            "oslo.message": inner.to_string(),
        }))
        .expect("json");
        rabbit::publish_raw(&channel, &world.topology, &body).await;
        let parked = world.expect_parked(&label, "malformed").await;
        let error = header_text(&parked, "x-snapq-last-error").unwrap_or_default();
        assert_mentions(&label, &error, &["_reply_q"]);
        world.assert_nothing_elsewhere(&label).await;
        for queue in [&victim, &traversal] {
            assert_eq!(
                rabbit::depth(queue).await,
                0,
                "{label}: a reply reached {queue}"
            );
        }
    }

    rabbit::delete_queues(&[victim.as_str(), traversal.as_str()]).await;
    world.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Requests snapq serves.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oslo_call_of_a_real_disk_gets_an_active_image() {
    let world = World::start("oslo-call").await;
    let disk = nova_disk_name();
    make_disk(&world.vms, &disk, 64 * MIB, 4).await;
    let image = world.queued_image("oslo-call").await;
    let mut request = OsloRequest::call(
        world.topic(),
        "snapshot_instance",
        json!({
            "disk": format!("{}/{disk}", world.services.nova_pool),
            "image_id": image.id.to_string(),
            "image_name": "oslo-call",
        }),
    );
    request.timeout_seconds = SNAPSHOT_TIMEOUT_SECONDS;
    let outcome = oslo("real disk, call", &request).await;
    assert!(
        outcome.ok(),
        "the snapshot call failed: {} {}",
        outcome.exc_type(),
        outcome.value()
    );
    let result = outcome.result();
    assert_eq!(result["status"], "active", "{result}");
    assert_eq!(result["method"], "direct", "{result}");
    let record = world.glance.get_image(image.id).await.expect("image");
    assert_eq!(record.status, "active");
    assert_eq!(record.size, Some(64 * MIB));
    for queue in world.topology.all_queues() {
        assert_eq!(rabbit::depth(queue).await, 0, "queue {queue} is empty");
    }
    world.delete_image(image.id).await;
    world.remove_disk(&world.vms, &disk).await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oslo_cast_of_a_real_disk_makes_the_image_active() {
    let world = World::start("oslo-cast").await;
    let disk = nova_disk_name();
    make_disk(&world.vms, &disk, 64 * MIB, 4).await;
    let image = world.queued_image("oslo-cast").await;
    let mut request = OsloRequest::call(
        world.topic(),
        "snapshot_instance",
        json!({
            "disk": format!("{}/{disk}", world.services.nova_pool),
            "image_id": image.id.to_string(),
            "image_name": "oslo-cast",
        }),
    );
    request.cast = true;
    let outcome = oslo("real disk, cast", &request).await;
    assert!(
        outcome.ok(),
        "the cast failed: {} {}",
        outcome.exc_type(),
        outcome.value()
    );
    world
        .glance
        .wait_active(
            image.id,
            Duration::from_secs(120),
            Duration::from_millis(200),
        )
        .await
        .expect("the cast image becomes active");
    let record = world.glance.get_image(image.id).await.expect("image");
    assert_eq!(record.size, Some(64 * MIB));
    let (_, snapshots) = leftovers(&world.images, &world.vms, image.id, &disk).await;
    assert!(
        snapshots.is_empty(),
        "snapshots left on the disk: {snapshots:?}"
    );
    // The job's last checkpoint may still be acknowledged as Glance turns active.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for queue in world.topology.all_queues() {
        assert_eq!(rabbit::depth(queue).await, 0, "queue {queue} is empty");
    }
    world.delete_image(image.id).await;
    world.remove_disk(&world.vms, &disk).await;
    world.finish().await;
}

#[tokio::test]
async fn oslo_call_to_topic_server_is_answered_by_a_worker() {
    // oslo's `client.prepare(server=...)` publishes to `<topic>.<server>`; snapq's workers are
    // interchangeable, and the work queue takes every server's routing key.
    let world = World::start("oslo-server").await;
    let disk = nova_disk_name();
    make_disk(&world.vms, &disk, 16 * MIB, 1).await;
    let image = world.queued_image("oslo-server").await;
    let mut request = OsloRequest::call(
        world.topic(),
        "snapshot_instance",
        json!({
            "disk": format!("{}/{disk}", world.services.nova_pool),
            "image_id": image.id.to_string(),
            "image_name": "oslo-server",
        }),
    );
    request.timeout_seconds = SNAPSHOT_TIMEOUT_SECONDS;
    request.server = Some("compute-7");
    let outcome = oslo("call to topic.server", &request).await;
    assert!(
        outcome.ok(),
        "the call to topic.server failed: {} {}",
        outcome.exc_type(),
        outcome.value()
    );
    assert_eq!(outcome.result()["status"], "active");
    for queue in world.topology.all_queues() {
        assert_eq!(rabbit::depth(queue).await, 0, "queue {queue} is empty");
    }
    world.delete_image(image.id).await;
    world.remove_disk(&world.vms, &disk).await;
    world.finish().await;
}
