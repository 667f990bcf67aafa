//! A safe layer over librbd and librados.
//!
//! All `unsafe` code lives in `ffi` (the rest of the crate denies it). Every call blocks; async
//! code runs it through [`run_blocking`] so the runtime's threads never wait on Ceph, and no
//! single monitor or OSD request waits longer than [`CephConfig::op_timeout`].
//!
//! Handles keep what they were opened from alive: an [`Image`] its [`Pool`], a pool its
//! connection. Dropping them in any order is safe.

mod cluster;
mod error;
#[allow(unsafe_code)]
mod ffi;
mod image;

pub use cluster::{CephConfig, Cluster, Pool};
pub use error::{RbdError, RbdErrorKind};
pub use image::{librbd_version, ChildSpec, Image, ParentSpec, SnapshotInfo};

/// Bytes from which an allocation gets its own mapping; see [`return_large_frees_to_the_os`].
pub const LARGE_ALLOCATION: usize = 1024 * 1024;

/// Keeps a long-running Ceph client's memory close to what it uses: allocations of
/// [`LARGE_ALLOCATION`] or more (read replies, data chunks) go back to the OS when freed
/// instead of staying resident. Call once at start.
pub fn return_large_frees_to_the_os() -> bool {
    ffi::set_malloc_mmap_threshold(LARGE_ALLOCATION)
}

/// Runs a blocking Ceph call on tokio's blocking thread pool.
pub async fn run_blocking<T, F>(call: F) -> Result<T, RbdError>
where
    F: FnOnce() -> Result<T, RbdError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(call)
        .await
        .unwrap_or_else(|join_error| {
            Err(RbdError::with_kind(
                "run blocking Ceph call",
                join_error.to_string(),
                RbdErrorKind::Interrupted,
            ))
        })
}

/// Connects without blocking the runtime, giving up after `timeout` (librados's own connect
/// timeout can be minutes).
pub async fn connect(
    config: CephConfig,
    timeout: std::time::Duration,
) -> Result<Cluster, RbdError> {
    let target = format!(
        "cluster as client.{} with {}",
        config.user, config.conf_path
    );
    match tokio::time::timeout(timeout, run_blocking(move || Cluster::connect(&config))).await {
        Ok(result) => result,
        Err(_) => Err(RbdError::with_kind(
            "connect to",
            target,
            RbdErrorKind::TimedOut,
        )),
    }
}
