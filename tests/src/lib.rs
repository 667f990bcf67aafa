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
