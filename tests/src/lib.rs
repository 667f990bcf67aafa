//! Shared set-up for snapq's integration tests.
//!
//! The tests run against the real services that `dev/up` starts on loopback. Their addresses
//! come from the environment, or from `$SNAPQ_STATE_DIR/env` (default `<repo>/.state/env`),
//! which `dev/up` writes. A missing setting fails the test with a message naming it: these
//! tests never skip silently.

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
    let Ok(text) = std::fs::read_to_string(state_env_file()) else {
        return HashMap::new();
    };
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A setting from the process environment, else from the env file; panics naming it if absent.
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

/// Connects to the dev cluster as `user` (e.g. "nova", "nova-ro").
pub async fn cluster_as(user: &str) -> snapq_common::rbd::Cluster {
    let config = snapq_common::rbd::CephConfig {
        conf_path: setting("SNAPQ_CEPH_CONF"),
        user: user.to_string(),
    };
    snapq_common::rbd::connect(config, std::time::Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the dev Ceph cluster as {user}: {e}"))
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
    use snapq_common::glance::{GlanceClient, GlanceConfig, LocationApi};
    use snapq_worker::{run_worker, WorkerSettings};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::{cluster_as, unique_name, Services};

    pub struct RunningWorker {
        pub topology: Topology,
        stop: Option<oneshot::Sender<()>>,
        task: Option<JoinHandle<()>>,
    }

    pub fn glance_client(url: &str) -> GlanceClient {
        GlanceClient::new(GlanceConfig {
            url: url.to_string(),
            token: None,
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
            let services = Services::from_env();
            let cluster = cluster_as(ceph_user).await;
            let image_pool = cluster
                .pool(&services.glance_pool)
                .expect("open Glance's pool");
            let settings = WorkerSettings {
                amqp_url: services.amqp_url.clone(),
                topology: topology.clone(),
                cluster,
                image_pool,
                glance: glance_client(&services.glance_url),
                concurrency: 2,
                active_timeout: Duration::from_secs(60),
                flatten_hold: Duration::from_secs(60),
                lease_duration: Duration::from_secs(6),
                max_attempts: 3,
                shutdown_grace: Duration::from_secs(30),
                name: format!("snapq-test-worker:{}", topology.work_queue),
            };
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

    /// A digest of the whole content of `pool/name[@snap]` (FNV-1a over 4 MiB reads).
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
                for byte in &buf[..n] {
                    hash ^= u64::from(*byte);
                    hash = hash.wrapping_mul(0x0100_0000_01b3);
                }
                offset += n as u64;
                if n == 0 {
                    break;
                }
            }
            Ok(hash)
        })
        .await
        .expect("read the image")
    }
}
