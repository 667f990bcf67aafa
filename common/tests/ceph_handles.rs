//! The librados/librbd handles against the dev Ceph cluster (`dev/up`): an open image keeps
//! its pool and connection alive, and the librados timeouts are set before connecting, so an
//! unreachable cluster fails a call instead of hanging it.
//!
//! The settings (`SNAPQ_CEPH_CONF`, `SNAPQ_CEPH_USER`, `SNAPQ_NOVA_POOL`) come from the
//! environment or from `$SNAPQ_STATE_DIR/env` (default `<repo>/.state/env`), as for the tests
//! in `tests/`. A missing setting fails the test naming it: these tests never skip.

#![forbid(unsafe_code)]

use std::sync::Mutex;
use std::time::Duration;

use snapq_common::rbd::{CephConfig, Cluster};

/// A setting from the process environment, else from the env file `dev/up` writes; panics
/// naming it if absent.
fn setting(name: &str) -> String {
    if let Ok(value) = std::env::var(name) {
        return value;
    }
    let file = match std::env::var("SNAPQ_STATE_DIR") {
        Ok(dir) => std::path::PathBuf::from(dir).join("env"),
        Err(_) => std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.state/env"),
    };
    std::fs::read_to_string(&file)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not set and {} does not define it: start the services with `dev/up` \
                 before running these tests",
                file.display()
            )
        })
}

/// These tests connect and shut connections down, which librados does not survive while
/// another connection of the process is in use: they run one at a time.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn config() -> CephConfig {
    CephConfig::new(setting("SNAPQ_CEPH_CONF"), setting("SNAPQ_CEPH_USER"))
}

fn connect(config: &CephConfig) -> Cluster {
    Cluster::connect(config).unwrap_or_else(|e| panic!("cannot connect to the dev cluster: {e}"))
}

fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}

#[test]
fn an_open_image_keeps_its_pool_and_cluster_alive() {
    let _serial = one_at_a_time();
    let pool_name = setting("SNAPQ_NOVA_POOL");
    let name = unique_name("snapq-handles");
    let data: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();

    let outcome = std::panic::catch_unwind(|| {
        let cluster = connect(&config());
        let pool = cluster.pool(&pool_name).expect("open the pool");
        pool.create_image(&name, 4 << 20).expect("create the image");
        let mut image = pool.open(&name).expect("open the image");
        let other_pool_handle = cluster.pool(&pool_name).expect("open the pool again");
        // Every handle the image came from goes; only the image is left.
        drop((pool, other_pool_handle, cluster));

        image
            .write_at(4096, &data)
            .expect("write through the image");
        image.flush().expect("flush the image");
        let mut back = vec![0u8; data.len()];
        let read = image
            .read_at(4096, &mut back)
            .expect("read through the image");
        assert_eq!(read, data.len());
        assert!(back == data, "the image reads back what was written");
        assert_eq!(image.size().expect("stat the image"), 4 << 20);
        // Dropping the image closes it, then its pool, then the connection.
        drop(image);
    });

    // A new connection, made after the first one has shut down, removes the image.
    let cluster = connect(&config());
    let pool = cluster.pool(&pool_name).expect("open the pool");
    let removed = pool.remove_image(&name);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    removed.expect("remove the image");
    assert!(!pool.image_exists(&name).expect("look the image up"));
}

#[test]
fn librados_timeouts_are_set_before_connecting() {
    let _serial = one_at_a_time();
    // 7 s: neither the default (10 s) nor the dev ceph.conf's client_mount_timeout (30 s).
    let config = CephConfig {
        op_timeout: Duration::from_secs(7),
        ..config()
    };
    let cluster = connect(&config);
    for option in [
        "rados_osd_op_timeout",
        "rados_mon_op_timeout",
        "client_mount_timeout",
    ] {
        let value = cluster
            .config_value(option)
            .unwrap_or_else(|e| panic!("read {option}: {e}"));
        let seconds: f64 = value
            .trim_end_matches('s')
            .parse()
            .unwrap_or_else(|e| panic!("{option} = {value:?} is not a number of seconds: {e}"));
        assert_eq!(seconds, 7.0, "{option} = {value:?}");
    }
    let err = cluster
        .config_value("no_such_option")
        .expect_err("unknown options cannot be read");
    assert!(err.to_string().contains("no_such_option"), "{err}");
}

#[test]
fn default_op_timeout_is_ten_seconds() {
    let _serial = one_at_a_time();
    let cluster = connect(&config());
    assert_eq!(CephConfig::DEFAULT_OP_TIMEOUT, Duration::from_secs(10));
    let value = cluster
        .config_value("rados_osd_op_timeout")
        .expect("read rados_osd_op_timeout");
    assert_eq!(
        value.trim_end_matches('s').parse::<f64>().ok(),
        Some(10.0),
        "{value:?}"
    );
}

#[test]
fn a_missing_ceph_conf_fails_naming_the_step() {
    let _serial = one_at_a_time();
    let config = CephConfig::new("/nonexistent/snapq/ceph.conf", "nova");
    let err = Cluster::connect(&config).expect_err("no ceph.conf, no connection");
    let shown = err.to_string();
    assert!(shown.contains("read the configuration of"), "{shown}");
    assert!(shown.contains("/nonexistent/snapq/ceph.conf"), "{shown}");
}

#[test]
fn connecting_to_unreachable_monitors_times_out_after_the_op_timeout() {
    let _serial = one_at_a_time();
    // The dev ceph.conf (keyring and all) with monitors where nothing listens.
    let conf = std::fs::read_to_string(setting("SNAPQ_CEPH_CONF")).expect("read the ceph.conf");
    let conf: String = conf
        .lines()
        .map(|line| {
            let line = if line.trim_start().starts_with("mon host") {
                "mon host = 127.0.0.1:1"
            } else {
                line
            };
            format!("{line}\n")
        })
        .collect();
    let path = std::env::temp_dir().join(format!("{}.conf", unique_name("snapq-unreachable")));
    std::fs::write(&path, conf).expect("write the ceph.conf");
    let config = CephConfig {
        op_timeout: Duration::from_secs(2),
        ..CephConfig::new(path.to_string_lossy(), setting("SNAPQ_CEPH_USER"))
    };

    let started = std::time::Instant::now();
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(Cluster::connect(&config).map(|_| ()));
    });
    let outcome = result.recv_timeout(Duration::from_secs(60));
    let _ = std::fs::remove_file(&path);
    let err = outcome
        .expect("connect gives up instead of hanging")
        .expect_err("nothing listens at 127.0.0.1:1");
    let waited = started.elapsed();
    assert!(err.is_transient(), "{err}");
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(20),
        "gave up after {waited:?}: {err}"
    );
}

/// Runs the `ceph` CLI as the dev cluster's admin.
fn ceph_admin(args: &[&str]) -> std::process::Output {
    std::process::Command::new("ceph")
        .arg("-c")
        .arg(setting("SNAPQ_CEPH_CONF"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the ceph CLI: {e}"))
}

#[test]
fn a_blocklisted_client_reconnects_and_its_pools_follow() {
    let _serial = one_at_a_time();
    let pool_name = setting("SNAPQ_NOVA_POOL");
    let cluster = connect(&config());
    let pool = cluster.pool(&pool_name).expect("open the pool");
    let object = unique_name("snapq-blocklist-probe");
    pool.set_xattr(&object, "probe", b"1")
        .expect("a write before");
    let address = cluster.client_addresses().expect("the client's address");
    let added = ceph_admin(&["osd", "blocklist", "add", address.trim()]);
    assert!(
        added.status.success(),
        "blocklist add: {}",
        String::from_utf8_lossy(&added.stderr)
    );
    let outcome = std::panic::catch_unwind(|| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let err = loop {
            match pool.set_xattr(&object, "probe", b"2") {
                Err(e) => break e,
                Ok(()) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the blocklist never took effect"
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        };
        assert_eq!(
            err.kind,
            snapq_common::rbd::RbdErrorKind::Blocklisted,
            "{err}"
        );
        assert!(err.is_transient());
        cluster.reconnect().expect("a new connection");
        // The pool opened before the reconnect uses the new connection.
        pool.set_xattr(&object, "probe", b"3")
            .expect("a write after reconnecting");
        assert_eq!(
            pool.xattr(&object, "probe").expect("read back").as_deref(),
            Some(&b"3"[..])
        );
        pool.remove_object(&object).expect("remove the probe");
    });
    let removed = ceph_admin(&["osd", "blocklist", "rm", address.trim()]);
    assert!(removed.status.success(), "blocklist rm");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
