//! Shared set-up for snapq's integration tests.
//!
//! The tests run against the real services that `dev/up` starts on loopback. Their addresses
//! come from the environment, or from `$SNAPQ_STATE_DIR/env` (default `<repo>/.state/env`),
//! which `dev/up` writes. A missing setting fails the test with a message naming it: these
//! tests never skip silently.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

/// Where the dev services listen, as `dev/up` reported them.
#[derive(Debug, Clone)]
pub struct Services {
    pub ceph_conf: String,
    pub ceph_user: String,
    pub nova_pool: String,
    pub glance_pool: String,
    pub amqp_url: String,
    pub glance_url: String,
    pub rabbit_mgmt_url: String,
    pub rabbit_mgmt_user: String,
    pub rabbit_mgmt_password: String,
}

fn state_env_file() -> PathBuf {
    match std::env::var("SNAPQ_STATE_DIR") {
        Ok(dir) => PathBuf::from(dir).join("env"),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.state/env"),
    }
}

/// Settings from `export KEY=VALUE` lines of the env file `dev/up` writes.
fn env_file_settings() -> HashMap<String, String> {
    settings_in(&state_env_file())
}

/// Settings from `export KEY=VALUE` lines of `path`; empty if it cannot be read.
fn settings_in(path: &std::path::Path) -> HashMap<String, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A setting from the process environment, else from the env file; panics naming it if absent.
/// The lease of worker processes the tests spawn: short, so a killed worker's jobs resume
/// within seconds.
pub const SPAWNED_LEASE_SECONDS: u64 = 4;

pub fn setting(name: &str) -> String {
    static FILE: OnceLock<HashMap<String, String>> = OnceLock::new();
    if let Ok(value) = std::env::var(name) {
        return value;
    }
    FILE.get_or_init(env_file_settings)
        .get(name)
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{name} is not set and {} does not define it: start the services with `dev/up` \
                 (the README's test command does) before running the integration tests",
                state_env_file().display()
            )
        })
}

/// A setting of the dev Keystone and its Glance, from the environment or from the file
/// `dev/up keystone` writes beside the main env file; panics naming it if absent.
pub fn keystone_setting(name: &str) -> String {
    static FILE: OnceLock<HashMap<String, String>> = OnceLock::new();
    if let Ok(value) = std::env::var(name) {
        return value;
    }
    let path = state_env_file().with_file_name("env.keystone");
    FILE.get_or_init(|| settings_in(&path))
        .get(name)
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{name} is not set and {} does not define it: start Keystone with                  `dev/up keystone` (the README's test command does)",
                path.display()
            )
        })
}

impl Services {
    /// Reads the service settings; panics with the missing variable's name.
    pub fn from_env() -> Services {
        Services {
            ceph_conf: setting("SNAPQ_CEPH_CONF"),
            ceph_user: setting("SNAPQ_CEPH_USER"),
            nova_pool: setting("SNAPQ_NOVA_POOL"),
            glance_pool: setting("SNAPQ_GLANCE_POOL"),
            amqp_url: setting("SNAPQ_AMQP_URL"),
            glance_url: setting("SNAPQ_GLANCE_URL"),
            rabbit_mgmt_url: setting("SNAPQ_RABBIT_MGMT_URL"),
            rabbit_mgmt_user: setting("SNAPQ_RABBIT_MGMT_USER"),
            rabbit_mgmt_password: setting("SNAPQ_RABBIT_MGMT_PASSWORD"),
        }
    }
}

/// A name no other test run uses: `<prefix>-<12 hex>`.
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}

/// The dev cluster as `user` (e.g. "nova", "nova-ro"): one connection per user for the
/// whole test process, shared by every test in it.
///
/// Tests run on parallel threads of one process, and librados aborts the process (an
/// `std::system_error`, "Invalid argument") when connections are made and shut down while
/// others are in use. So connections are made one at a time and never shut down; the process
/// exit ends them. Workers do the same: one connection for the process's life.
pub async fn cluster_as(user: &str) -> snapq_common::rbd::Cluster {
    use std::collections::HashMap;
    use std::sync::OnceLock;
    static CLUSTERS: OnceLock<tokio::sync::Mutex<HashMap<String, snapq_common::rbd::Cluster>>> =
        OnceLock::new();
    let mut clusters = CLUSTERS
        .get_or_init(|| tokio::sync::Mutex::new(HashMap::new()))
        .lock()
        .await;
    if let Some(cluster) = clusters.get(user) {
        return cluster.clone();
    }
    let config = snapq_common::rbd::CephConfig {
        conf_path: setting("SNAPQ_CEPH_CONF"),
        user: user.to_string(),
        // Below half the in-process workers' lease (6 s), as snapq-worker requires.
        op_timeout: std::time::Duration::from_secs(3),
    };
    let cluster = snapq_common::rbd::connect(config, std::time::Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the dev Ceph cluster as {user}: {e}"));
    clusters.insert(user.to_string(), cluster.clone());
    cluster
}

/// Deterministic pseudo-random bytes (xorshift), so tests can check data without storing it.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub mod worker_harness {
    //! Runs a real `snapq-worker` (the library, in this process) against the dev services,
    //! on a topic of its own so tests running side by side never take each other's jobs.

    use std::time::Duration;

    use snapq_common::amqp::{Topology, TopologyConfig};
    use snapq_common::glance::{GlanceClient, GlanceConfig, ImageRecord, LocationApi, NewImage};
    use snapq_common::message::{DiskSpec, SnapshotRequest};
    use snapq_producer::Producer;
    use snapq_worker::{run_worker, Role, WorkerSettings};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::{cluster_as, unique_name, Services};

    pub struct RunningWorker {
        pub topology: Topology,
        stop: Option<oneshot::Sender<()>>,
        task: Option<JoinHandle<()>>,
    }

    /// A queued raw Glance image called `name`, and the request that snapshots the Nova
    /// pool's `disk` into that image.
    pub async fn queued_image_request(
        glance: &GlanceClient,
        disk: &str,
        name: &str,
    ) -> (ImageRecord, SnapshotRequest) {
        let image = glance
            .create_image(&NewImage::raw(name))
            .await
            .expect("a queued Glance image");
        let request = SnapshotRequest::new(
            DiskSpec::new(Services::from_env().nova_pool, disk.to_string()).expect("valid disk"),
            image.id,
            name.to_string(),
        );
        (image, request)
    }

    /// What a snapshot call needs: [`queued_image_request`] and a producer on `topology`.
    pub async fn snapshot_call(
        glance: &GlanceClient,
        topology: &Topology,
        disk: &str,
        name: &str,
    ) -> (ImageRecord, Producer, SnapshotRequest) {
        let (image, request) = queued_image_request(glance, disk, name).await;
        let producer = Producer::connect(&Services::from_env().amqp_url, topology.clone())
            .await
            .expect("producer");
        (image, producer, request)
    }

    pub fn glance_client(url: &str) -> GlanceClient {
        GlanceClient::new(GlanceConfig {
            url: url.to_string(),
            ca_file: None,
            token: None,
            keystone: None,
            request_timeout: Duration::from_secs(30),
            location_api: LocationApi::Auto,
        })
        .expect("valid Glance settings")
    }

    /// A fresh topology (work queue, dead-letter queue) for one test.
    pub fn test_topology(prefix: &str) -> Topology {
        Topology::new(TopologyConfig {
            topic: unique_name(prefix),
            delivery_limit: 3,
            ..TopologyConfig::default()
        })
    }

    impl RunningWorker {
        /// Starts a worker connecting to Ceph as `ceph_user`.
        pub async fn start(topology: Topology, ceph_user: &str) -> RunningWorker {
            RunningWorker::start_as(topology, ceph_user, Role::Work).await
        }

        /// Starts a worker in `role`.
        pub async fn start_as(topology: Topology, ceph_user: &str, role: Role) -> RunningWorker {
            let glance_url = Services::from_env().glance_url;
            RunningWorker::start_with_glance(topology, ceph_user, role, &glance_url).await
        }

        /// Starts a worker in `role` talking to the Glance at `glance_url`.
        pub async fn start_with_glance(
            topology: Topology,
            ceph_user: &str,
            role: Role,
            glance_url: &str,
        ) -> RunningWorker {
            RunningWorker::start_with_client(topology, ceph_user, role, glance_client(glance_url))
                .await
        }

        /// Starts a worker in `role` using `glance` (e.g. one authenticating with Keystone).
        pub async fn start_with_client(
            topology: Topology,
            ceph_user: &str,
            role: Role,
            glance: GlanceClient,
        ) -> RunningWorker {
            RunningWorker::start_configured(topology, ceph_user, role, glance, |_| {}).await
        }

        /// Starts a worker in `role` using `glance`, its settings changed by `configure`.
        pub async fn start_configured(
            topology: Topology,
            ceph_user: &str,
            role: Role,
            glance: GlanceClient,
            configure: impl FnOnce(&mut WorkerSettings),
        ) -> RunningWorker {
            // The worker's logs, shown with a failing test's output.
            let _ = tracing_subscriber::fmt()
                .with_test_writer()
                .with_env_filter("info,lapin=warn")
                .try_init();
            let services = Services::from_env();
            let cluster = cluster_as(ceph_user).await;
            let lease_pool = cluster
                .pool(&services.nova_pool)
                .expect("open the lease pool");
            let image_pool = cluster
                .pool(&services.glance_pool)
                .expect("open Glance's pool");
            let settings = WorkerSettings {
                role,
                amqp_url: services.amqp_url.clone(),
                amqp_ca: None,
                topology: topology.clone(),
                cluster,
                image_pool,
                glance,
                concurrency: 2,
                active_timeout: Duration::from_secs(60),
                lost_import: snapq_worker::settings::LostImport::DEFAULT,
                notifications: snapq_worker::settings::NotificationSettings::off(),
                flatten_hold: Duration::from_secs(60),
                flatten_in_process_below: 1 << 30,
                glance_store_fsid: None,
                lease_duration: Duration::from_secs(6),
                max_attempts: 3,
                shutdown_grace: Duration::from_secs(30),
                lease_pool,
                source_policy: snapq_worker::SourcePolicy::nova(
                    &services.nova_pool,
                    &services.glance_pool,
                )
                .expect("the Nova source policy"),
                name: format!("snapq-test-worker:{}", topology.work_queue),
            };
            let mut settings = settings;
            configure(&mut settings);
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                let shutdown = async {
                    let _ = stopped.await;
                };
                if let Err(e) = run_worker(settings, shutdown).await {
                    panic!("worker failed: {e}");
                }
            });
            // Let the worker declare the topology and start consuming.
            tokio::time::sleep(Duration::from_millis(500)).await;
            RunningWorker {
                topology,
                stop: Some(stop),
                task: Some(task),
            }
        }

        /// Asks the worker to stop and waits until its running jobs are done.
        pub async fn stop(mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(task) = self.task.take() {
                task.await.expect("worker task ends cleanly");
            }
        }
    }
}

pub mod rabbit {
    //! Looking at queues through the broker, for assertions.

    use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeleteOptions};

    use super::Services;

    pub async fn channel() -> (lapin::Connection, lapin::Channel) {
        let services = Services::from_env();
        let connection = snapq_common::amqp::connect(&services.amqp_url, "snapq-tests")
            .await
            .expect("connect to RabbitMQ");
        let channel = snapq_common::amqp::open_confirmed_channel(&connection)
            .await
            .expect("open a channel");
        (connection, channel)
    }

    /// Takes one message off `queue`, waiting up to `timeout` for one to arrive.
    pub async fn get_one(
        queue: &str,
        timeout: std::time::Duration,
    ) -> Option<lapin::message::BasicGetMessage> {
        let (_connection, channel) = channel().await;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = channel
                .basic_get(queue.into(), BasicGetOptions::default())
                .await
                .expect("basic.get");
            if let Some(message) = got {
                message
                    .delivery
                    .ack(BasicAckOptions::default())
                    .await
                    .expect("ack");
                return Some(message);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Messages ready in `queue`.
    pub async fn depth(queue: &str) -> u32 {
        let (_connection, channel) = channel().await;
        channel
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .map(|q| q.message_count())
            .expect("queue exists")
    }

    /// Publishes `body` as it is (oslo's properties, no snapq headers) to the topology's
    /// request exchange, as a foreign or broken producer would.
    pub async fn publish_raw(
        channel: &lapin::Channel,
        topology: &snapq_common::amqp::Topology,
        body: &[u8],
    ) {
        snapq_common::amqp::publish_confirmed(
            channel,
            &topology.request_exchange,
            &topology.request_routing_key,
            body,
            snapq_common::amqp::oslo_properties(),
        )
        .await
        .expect("publish");
    }

    /// The snapq job state a message carries in its headers.
    pub fn job_state(message: &lapin::message::BasicGetMessage) -> snapq_common::job::JobState {
        snapq_common::job::JobState::from_headers(message.delivery.properties.headers().as_ref())
            .expect("snapq job headers")
    }

    pub async fn delete_queues(queues: &[&str]) {
        let (_connection, channel) = channel().await;
        for queue in queues {
            let _ = channel
                .queue_delete((*queue).into(), QueueDeleteOptions::default())
                .await;
        }
    }
}

pub mod disks {
    //! Instance disks for tests: sparse images with deterministic data.

    use snapq_common::rbd::{run_blocking, Pool};

    use super::pattern;

    pub const MIB: u64 = 1024 * 1024;

    /// Creates `pool/name` of `size` bytes with `extents` 4 MiB extents of pattern data spread
    /// over it; the rest stays unallocated.
    pub async fn make_disk(pool: &Pool, name: &str, size: u64, extents: u64) {
        let (pool, name) = (pool.clone(), name.to_string());
        run_blocking(move || {
            pool.create_image(&name, size)?;
            let mut image = pool.open(&name)?;
            let stride = (size / extents.max(1)) / (4 * MIB) * (4 * MIB);
            for i in 0..extents {
                image.write_at(i * stride, &pattern(i + 1, (4 * MIB) as usize))?;
            }
            image.flush()
        })
        .await
        .expect("create the test disk");
    }

    /// What a job for `image_id` on `vms/disk` may have left in Ceph: whether a clone named
    /// after the image exists in `images`, and the snapshots on the source disk.
    pub async fn leftovers(
        images: &Pool,
        vms: &Pool,
        image_id: uuid::Uuid,
        disk: &str,
    ) -> (bool, Vec<snapq_common::rbd::SnapshotInfo>) {
        let (images, vms, disk) = (images.clone(), vms.clone(), disk.to_string());
        run_blocking(move || {
            Ok((
                images.image_exists(&image_id.to_string())?,
                vms.open_read_only(&disk, None)?.snapshots()?,
            ))
        })
        .await
        .expect("inspect Ceph")
    }

    /// A digest of the whole content of `pool/name[@snap]` (FNV-1a over 8-byte words of 4 MiB
    /// reads).
    pub async fn content_digest(pool: &Pool, name: &str, snap: Option<&str>) -> u64 {
        let (pool, name, snap) = (pool.clone(), name.to_string(), snap.map(str::to_string));
        run_blocking(move || {
            let image = pool.open_read_only(&name, snap.as_deref())?;
            let size = image.size()?;
            let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
            let mut buf = vec![0u8; (4 * MIB) as usize];
            let mut offset = 0;
            while offset < size {
                let n = image.read_at(offset, &mut buf)?;
                if n == 0 {
                    break;
                }
                buf[n..].fill(0);
                for word in buf[..n.div_ceil(8) * 8].chunks_exact(8) {
                    let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
                    hash = (hash ^ word).wrapping_mul(0x0100_0000_01b3);
                }
                offset += n as u64;
            }
            Ok(hash)
        })
        .await
        .expect("read the image")
    }
}

pub mod worker_process {
    //! `snapq-worker` as a separate process, so tests can crash it (failpoints abort it) and
    //! start a fresh one, exactly as in production.

    use std::path::PathBuf;
    use std::process::Stdio;
    use std::time::Duration;

    use snapq_common::amqp::Topology;
    use tokio::process::{Child, Command};

    use super::Services;

    /// The worker binary `cargo build --workspace --bins` made (dev/test builds it first).
    pub fn worker_binary() -> PathBuf {
        binary("snapq-worker")
    }

    /// A binary of the workspace, built by `cargo build --workspace --bins`.
    pub fn binary(name: &str) -> PathBuf {
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
        let binary = target.join("debug").join(name);
        assert!(
            binary.exists(),
            "{} is missing: run `cargo build --workspace --bins` first (dev/test does)",
            binary.display()
        );
        binary
    }

    pub struct WorkerProcess {
        pub child: Child,
        pub log: PathBuf,
    }

    impl WorkerProcess {
        /// Starts a worker on `topology`'s queues; `failpoint` arms a crash point.
        pub fn spawn(topology: &Topology, name: &str, failpoint: Option<&str>) -> WorkerProcess {
            let env: Vec<(&str, &str)> = failpoint
                .map(|p| ("SNAPQ_TEST_FAILPOINT", p))
                .into_iter()
                .collect();
            WorkerProcess::spawn_with(topology, name, &env)
        }

        /// Starts a dead-letter consumer (cleanup, full copy, parking lot).
        pub fn spawn_dead_letter(topology: &Topology, name: &str) -> WorkerProcess {
            WorkerProcess::spawn_with(topology, name, &[("SNAPQ_ROLE", "dead-letter")])
        }

        /// Starts a worker with extra environment settings. Flattens go through the Ceph
        /// manager (the path that survives the worker) unless `env` says otherwise.
        pub fn spawn_with(topology: &Topology, name: &str, env: &[(&str, &str)]) -> WorkerProcess {
            let services = Services::from_env();
            let log_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-logs");
            std::fs::create_dir_all(&log_dir).expect("create the test log directory");
            let log = log_dir.join(format!("{}-{name}.log", topology.work_queue));
            let log_file = std::fs::File::create(&log).expect("create the worker log");
            let mut command = Command::new(worker_binary());
            command
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("RUST_LOG", "info,lapin=warn")
                .env("NO_COLOR", "1")
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
                .env(
                    "SNAPQ_LEASE_SECONDS",
                    crate::SPAWNED_LEASE_SECONDS.to_string(),
                )
                .env("SNAPQ_CEPH_OP_TIMEOUT", "2")
                .env("SNAPQ_CONCURRENCY", "2")
                .env("SNAPQ_SHUTDOWN_GRACE", "30")
                .env("SNAPQ_FLATTEN_IN_PROCESS_BELOW_GIB", "0")
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("clone log handle"))
                .stderr(log_file)
                .kill_on_drop(true);
            command.envs(env.iter().copied());
            let child = command.spawn().expect("start snapq-worker");
            WorkerProcess { child, log }
        }

        /// Waits for the process to end by itself; panics after `timeout`.
        pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
            match tokio::time::timeout(timeout, self.child.wait()).await {
                Ok(status) => status.expect("wait for the worker"),
                Err(_) => panic!(
                    "worker did not exit within {timeout:?}; log: {}",
                    self.log.display()
                ),
            }
        }

        /// Sends SIGTERM and waits for a clean exit.
        pub async fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
            if let Some(pid) = self.child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            self.wait_exit(timeout).await
        }

        pub fn log_text(&self) -> String {
            std::fs::read_to_string(&self.log).unwrap_or_default()
        }
    }
}

pub mod job_fixture {
    //! One snapshot job's world: a disk, a queued Glance image and a topology of its own, with
    //! the checks every resumed, duplicated or racing job must pass.

    use std::time::Duration;

    use snapq_common::amqp::Topology;
    use snapq_common::glance::GlanceClient;
    use snapq_common::message::SnapshotRequest;
    use snapq_common::rbd::{run_blocking, Pool};
    use snapq_producer::Producer;
    use uuid::Uuid;

    use super::disks::{content_digest, make_disk, MIB};
    use super::worker_harness::{glance_client, queued_image_request, test_topology};
    use super::{cluster_as, rabbit, Services};

    /// One job's fixture: a disk, a queued Glance image, and a topology of its own.
    pub struct Job {
        pub services: Services,
        pub vms: Pool,
        pub images: Pool,
        pub glance: GlanceClient,
        pub topology: Topology,
        pub disk: String,
        pub disk_size: u64,
        pub image_id: Uuid,
        pub request: SnapshotRequest,
    }

    impl Job {
        /// A disk of `size_mib` with `extents` 4 MiB extents written, and a queued image.
        pub async fn new(prefix: &str, size_mib: u64, extents: u64) -> Job {
            let services = Services::from_env();
            let cluster = cluster_as("nova").await;
            let vms = cluster.pool(&services.nova_pool).expect("nova pool");
            let images = cluster.pool(&services.glance_pool).expect("glance pool");
            let disk = format!("{}_disk", Uuid::new_v4());
            make_disk(&vms, &disk, size_mib * MIB, extents).await;
            let glance = glance_client(&services.glance_url);
            let (image, request) = queued_image_request(&glance, &disk, prefix).await;
            let image_id = image.id;
            Job {
                topology: test_topology(prefix),
                services,
                vms,
                images,
                glance,
                disk,
                disk_size: size_mib * MIB,
                image_id,
                request,
            }
        }

        pub async fn publish(&self, request: &SnapshotRequest) {
            let producer = Producer::connect(&self.services.amqp_url, self.topology.clone())
                .await
                .expect("producer");
            producer.cast(request).await.expect("publish");
            producer.close().await;
        }

        pub async fn wait_active(&self) {
            self.glance
                .wait_active(
                    self.image_id,
                    Duration::from_secs(120),
                    Duration::from_millis(200),
                )
                .await
                .expect("the image becomes active");
        }

        /// Waits until no queue of the job's topology holds a message for two seconds running.
        pub async fn wait_queues_empty(&self) {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let mut quiet_since = None;
            loop {
                let mut total = 0;
                for queue in self.topology.all_queues() {
                    total += rabbit::depth(queue).await;
                }
                match (total, quiet_since) {
                    (0, None) => quiet_since = Some(tokio::time::Instant::now()),
                    (0, Some(since)) if since.elapsed() >= Duration::from_secs(2) => return,
                    (0, Some(_)) => {}
                    _ => quiet_since = None,
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "queues still hold {total} messages"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }

        /// The end state every case must reach.
        pub async fn assert_converged(&self) {
            let record = self.glance.get_image(self.image_id).await.expect("image");
            assert_eq!(record.status, "active");
            assert_eq!(record.size, Some(self.disk_size));
            let id = self.image_id.to_string();
            let (images, vms, id2, disk) = (
                self.images.clone(),
                self.vms.clone(),
                id.clone(),
                self.disk.clone(),
            );
            let (parent, source_snaps, image_snaps, trash) = run_blocking(move || {
                let image = images.open_read_only(&id2, None)?;
                Ok((
                    image.parent()?,
                    vms.open_read_only(&disk, None)?.snapshots()?,
                    image.snapshots()?,
                    images.trash_image_names()?,
                ))
            })
            .await
            .expect("inspect Ceph");
            assert_eq!(parent, None, "the image is flattened");
            assert!(
                source_snaps.is_empty(),
                "snapshots left on the disk: {source_snaps:?}"
            );
            let names: Vec<_> = image_snaps.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(names, ["snap"], "the image has exactly Glance's snapshot");
            assert!(!trash.contains(&id), "the image is not in the trash");
            assert_eq!(
                content_digest(&self.images, &id, Some("snap")).await,
                content_digest(&self.vms, &self.disk, None).await,
                "the image holds the disk's data"
            );
            for queue in self.topology.all_queues() {
                assert_eq!(rabbit::depth(queue).await, 0, "queue {queue} is empty");
            }
        }

        pub async fn clean_up(self) {
            // Glance may answer a passing 5xx under load; only that is retried.
            let mut attempt = 0;
            while let Err(e) = self.glance.delete_image(self.image_id).await {
                attempt += 1;
                assert!(e.is_transient() && attempt < 5, "delete image: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let (vms, disk) = (self.vms.clone(), self.disk.clone());
            run_blocking(move || vms.remove_image(&disk))
                .await
                .expect("remove disk");
            rabbit::delete_queues(&self.topology.all_queues()).await;
        }
    }
}

pub mod replies {
    //! Answers to oslo `call`s, kept for the whole test. The reply queue is named like oslo's
    //! (`reply_<32 hex>`) but is a quorum queue, so it outlives a broker restart, and a task
    //! drains it, reconnecting whenever the broker goes away. Every reply is kept, duplicates
    //! included, with the time it was taken off the queue.

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
    use lapin::types::{AMQPValue, FieldTable, LongString};
    use snapq_common::job::{now_ms, HistoryEntry};
    use snapq_common::message::{ReplyTo, RpcReply, SnapshotRequest};
    use tokio::sync::watch;
    use tokio::task::JoinHandle;

    use super::{rabbit, Services};

    /// One reply as it arrived.
    #[derive(Debug, Clone)]
    pub struct Received {
        pub reply: RpcReply,
        /// When the inbox took it off the queue (Unix ms; at most a poll interval late).
        pub at_ms: u64,
    }

    impl Received {
        /// `result.method`: `direct` or `fallback` (None for a failure).
        pub fn method(&self) -> Option<&str> {
            self.reply.result.as_ref()?.get("method")?.as_str()
        }

        /// The job history the reply carries (`result.history`).
        pub fn history(&self) -> Vec<HistoryEntry> {
            reply_history(&self.reply)
        }
    }

    /// The job history a successful reply carries (`result.history`); empty for a failure.
    pub fn reply_history(reply: &RpcReply) -> Vec<HistoryEntry> {
        reply
            .result
            .as_ref()
            .and_then(|r| r.get("history"))
            .map(|h| {
                serde_json::from_value(h.clone())
                    .unwrap_or_else(|e| panic!("a reply's history is not a job history: {e}: {h}"))
            })
            .unwrap_or_default()
    }

    pub struct ReplyInbox {
        queue: String,
        received: Arc<Mutex<Vec<Received>>>,
        stop: watch::Sender<bool>,
        task: Option<JoinHandle<()>>,
    }

    async fn declare(channel: &lapin::Channel, queue: &str) -> Result<(), lapin::Error> {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("quorum".as_bytes().to_vec())),
        );
        // Polled every 50 ms while the inbox lives; one a failing test left behind goes away
        // by itself five minutes on.
        args.insert("x-expires".into(), AMQPValue::LongInt(300_000));
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                args,
            )
            .await
            .map(|_| ())
    }

    /// Takes every reply waiting in `queue`; Err when the broker is (or went) away.
    async fn drain(
        channel: &lapin::Channel,
        queue: &str,
        into: &Mutex<Vec<Received>>,
    ) -> Result<(), String> {
        loop {
            let got = channel
                .basic_get(queue.into(), BasicGetOptions::default())
                .await
                .map_err(|e| e.to_string())?;
            let Some(message) = got else {
                return Ok(());
            };
            let reply = RpcReply::decode(&message.delivery.data)
                .unwrap_or_else(|e| panic!("an undecodable reply in {queue}: {e}"));
            into.lock().expect("inbox").push(Received {
                reply,
                at_ms: now_ms(),
            });
            message
                .delivery
                .ack(BasicAckOptions::default())
                .await
                .map_err(|e| e.to_string())?;
        }
    }

    impl ReplyInbox {
        /// Declares a fresh reply queue and starts draining it.
        pub async fn open() -> ReplyInbox {
            let queue = format!("reply_{}", uuid::Uuid::new_v4().simple());
            {
                let (_connection, channel) = rabbit::channel().await;
                declare(&channel, &queue)
                    .await
                    .expect("declare the reply queue");
            }
            let received = Arc::new(Mutex::new(Vec::new()));
            let (stop, mut stopped) = watch::channel(false);
            let (queue2, received2) = (queue.clone(), received.clone());
            let task = tokio::spawn(async move {
                let url = Services::from_env().amqp_url;
                let mut connection: Option<(lapin::Connection, lapin::Channel)> = None;
                loop {
                    if connection.is_none() {
                        if let Ok(c) =
                            snapq_common::amqp::connect(&url, "snapq-tests-replies").await
                        {
                            if let Ok(ch) = c.create_channel().await {
                                // Redeclared after a broker restart (a quorum queue survives
                                // it; this only makes sure).
                                if declare(&ch, &queue2).await.is_ok() {
                                    connection = Some((c, ch));
                                }
                            }
                        }
                    }
                    if let Some((_, channel)) = &connection {
                        if drain(channel, &queue2, &received2).await.is_err() {
                            connection = None;
                        }
                    }
                    let pause = if connection.is_some() { 50 } else { 500 };
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(pause)) => {}
                        _ = stopped.changed() => {
                            if let Some((_, channel)) = &connection {
                                let _ = drain(channel, &queue2, &received2).await;
                            }
                            if let Some((c, _)) = connection {
                                let _ = c.close(200, "done".into()).await;
                            }
                            return;
                        }
                    }
                }
            });
            ReplyInbox {
                queue,
                received,
                stop,
                task: Some(task),
            }
        }

        pub fn queue(&self) -> &str {
            &self.queue
        }

        /// `request` as an oslo `call` answered to this inbox, with a fresh `_msg_id`.
        pub fn call(&self, request: &SnapshotRequest) -> SnapshotRequest {
            SnapshotRequest {
                reply: Some(ReplyTo {
                    msg_id: uuid::Uuid::new_v4().simple().to_string(),
                    reply_queue: self.queue.clone(),
                }),
                ..request.clone()
            }
        }

        /// Every reply so far, in arrival order.
        pub fn received(&self) -> Vec<Received> {
            self.received.lock().expect("inbox").clone()
        }

        /// The replies to the call `msg_id`.
        pub fn replies_to(&self, msg_id: &str) -> Vec<Received> {
            self.received()
                .into_iter()
                .filter(|r| r.reply.msg_id == msg_id)
                .collect()
        }

        /// Waits until every call in `msg_ids` has at least one reply; Err lists those that
        /// have none after `timeout`.
        pub async fn wait_for_answers(
            &self,
            msg_ids: &[String],
            timeout: Duration,
        ) -> Result<(), Vec<String>> {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let received = self.received();
                let missing: Vec<String> = msg_ids
                    .iter()
                    .filter(|id| !received.iter().any(|r| &r.reply.msg_id == *id))
                    .cloned()
                    .collect();
                if missing.is_empty() {
                    return Ok(());
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(missing);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        /// Stops draining (after one last drain) and deletes the queue.
        pub async fn close(mut self) {
            let _ = self.stop.send(true);
            if let Some(task) = self.task.take() {
                let _ = task.await;
            }
            rabbit::delete_queues(&[self.queue.as_str()]).await;
        }
    }

    /// An inbox dropped without [`ReplyInbox::close`] (a failing test) stops draining, so it
    /// does not declare its queue again after someone deletes it.
    impl Drop for ReplyInbox {
        fn drop(&mut self) {
            if let Some(task) = self.task.take() {
                task.abort();
            }
        }
    }
}

pub mod rados_objects {
    //! RADOS objects snapq keeps beside the disks (job leases), looked up with the `rados`
    //! CLI as Nova's user.

    use super::setting;

    /// Whether `pool` holds the RADOS object `object`.
    pub async fn object_exists(pool: &str, object: &str) -> bool {
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
        if out.status.success() {
            return true;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("No such file or directory"),
            "rados stat {pool}/{object} failed: {stderr}"
        );
        false
    }

    /// The name of the lease object of the job for Glance image `image_id`.
    pub fn lease_object(image_id: uuid::Uuid) -> String {
        format!("snapq_lease.{image_id}")
    }

    /// Of `image_ids`, those whose job lease object is still in `pool`.
    pub async fn lease_objects_left(pool: &str, image_ids: &[uuid::Uuid]) -> Vec<String> {
        let mut left = Vec::new();
        for id in image_ids {
            let object = lease_object(*id);
            if object_exists(pool, &object).await {
                left.push(object);
            }
        }
        left
    }
}
