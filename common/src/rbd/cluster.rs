//! A connection to a Ceph cluster and its pools, as one Ceph user.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ceph::ceph::IoCtx;

use super::error::{RbdError, RbdErrorKind};
use super::ffi::{self, RadosHandle};
use super::image::Image;

/// How to reach the cluster: a ceph.conf (which names the monitors and the keyring) and the
/// Ceph user id without its `client.` prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CephConfig {
    pub conf_path: String,
    pub user: String,
}

/// A connected cluster. Cheap to clone; the connection closes when the last clone (and every
/// pool opened from it) is dropped.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
    fsid: String,
    user: String,
}

/// What every clone of a [`Cluster`] shares.
struct Shared {
    // Field order matters: the cached I/O contexts must be destroyed before the cluster
    // handle they were made from.
    /// One I/O context per pool name, opened on first use and kept for the connection's
    /// life: a long-running worker then neither pays for a pool lookup on each job nor
    /// creates and destroys contexts while other threads use the connection.
    pools: Mutex<HashMap<String, Arc<IoCtx>>>,
    handle: RadosHandle,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("fsid", &self.fsid)
            .field("user", &self.user)
            .finish()
    }
}

impl Cluster {
    /// Connects (blocking; librados may wait up to `client_mount_timeout`).
    pub fn connect(config: &CephConfig) -> Result<Cluster, RbdError> {
        let target = format!(
            "cluster as client.{} with {}",
            config.user, config.conf_path
        );
        let rados = ceph::ceph::connect_to_ceph(&config.user, &config.conf_path)
            .map_err(|e| connect_error(&target, &e))?;
        let fsid = rados
            .rados_fsid()
            .map_err(|e| connect_error(&target, &e))?
            .to_string();
        Ok(Cluster {
            shared: Arc::new(Shared {
                pools: Mutex::new(HashMap::new()),
                handle: RadosHandle(rados),
            }),
            fsid,
            user: config.user.clone(),
        })
    }

    /// The cluster's fsid, as it appears in `rbd://<fsid>/...` locations.
    pub fn fsid(&self) -> &str {
        &self.fsid
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// Sends a JSON command to the active ceph-mgr and returns its JSON output.
    pub fn mgr_command(&self, command: &serde_json::Value) -> Result<String, RbdError> {
        let prefix = command["prefix"].as_str().unwrap_or("command").to_string();
        ffi::mgr_command(&self.shared.handle, &command.to_string())
            .map(|(out, _)| out)
            .map_err(|(errno, status)| {
                let target = if status.is_empty() {
                    prefix
                } else {
                    format!("{prefix} ({status})")
                };
                RbdError::new("ceph-mgr", target, errno)
            })
    }

    /// Opens a pool, or returns the context this connection already has for it.
    pub fn pool(&self, name: &str) -> Result<Pool, RbdError> {
        // A poisoned lock only means another thread panicked while holding it; the map
        // itself is always consistent (one insert at a time).
        let mut pools = self
            .shared
            .pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let io = match pools.get(name) {
            Some(io) => Arc::clone(io),
            None => {
                let io = self
                    .shared
                    .handle
                    .0
                    .get_rados_ioctx(name)
                    .map_err(|e| rados_error("open pool", name, &e))?;
                let io = Arc::new(io);
                pools.insert(name.to_string(), Arc::clone(&io));
                io
            }
        };
        Ok(Pool {
            io,
            name: name.to_string(),
            _cluster: self.clone(),
        })
    }
}

fn rados_errno(e: &ceph::error::RadosError) -> Option<i32> {
    match e {
        ceph::error::RadosError::ApiError(errno) => Some(*errno as i32),
        _ => None,
    }
}

fn rados_error(op: &'static str, target: &str, e: &ceph::error::RadosError) -> RbdError {
    match rados_errno(e) {
        Some(errno) => RbdError::new(op, target, errno.abs()),
        None => RbdError::with_kind(op, target, RbdErrorKind::Other(0)),
    }
}

fn connect_error(target: &str, e: &ceph::error::RadosError) -> RbdError {
    rados_error("connect to", target, e)
}

/// An open pool. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    // Field order matters: the I/O context must be destroyed before the cluster handle.
    io: Arc<IoCtx>,
    name: String,
    _cluster: Cluster,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("name", &self.name).finish()
    }
}

impl Pool {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn io(&self) -> &IoCtx {
        &self.io
    }

    fn spec(&self, image: &str) -> String {
        format!("{}/{}", self.name, image)
    }

    /// Creates an image with the cluster's default features.
    pub fn create_image(&self, name: &str, size: u64) -> Result<(), RbdError> {
        ffi::create(&self.io, name, size).map_err(|e| RbdError::new("create", self.spec(name), e))
    }

    pub fn remove_image(&self, name: &str) -> Result<(), RbdError> {
        ffi::remove(&self.io, name).map_err(|e| RbdError::new("remove", self.spec(name), e))
    }

    /// Opens an image (read-write) at its head.
    pub fn open(&self, name: &str) -> Result<Image, RbdError> {
        Image::open(self, name, None, false)
    }

    /// Opens an image read-only, at `snap` or at its head.
    pub fn open_read_only(&self, name: &str, snap: Option<&str>) -> Result<Image, RbdError> {
        Image::open(self, name, snap, true)
    }

    /// Whether the image exists (opening it read-only to find out).
    pub fn image_exists(&self, name: &str) -> Result<bool, RbdError> {
        match self.open_read_only(name, None) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Clones `parent_pool/parent@snap` into this pool as `child`, with `features`.
    pub fn clone_from(
        &self,
        parent_pool: &Pool,
        parent: &str,
        snap: &str,
        child: &str,
        features: u64,
    ) -> Result<(), RbdError> {
        ffi::clone(parent_pool.io(), parent, snap, &self.io, child, features).map_err(|e| {
            RbdError::new(
                "clone",
                format!(
                    "{}@{} -> {}",
                    parent_pool.spec(parent),
                    snap,
                    self.spec(child)
                ),
                e,
            )
        })
    }

    /// Takes or renews the exclusive RADOS lock `lock` on `object` for `duration`, as the
    /// holder `cookie`. With `must_renew`, fails with NotFound unless this holder still has it
    /// (the lease was lost); otherwise fails with Busy/AlreadyExists while another holder has it.
    pub fn lock_exclusive(
        &self,
        object: &str,
        lock: &str,
        cookie: &str,
        duration: std::time::Duration,
        must_renew: bool,
    ) -> Result<(), RbdError> {
        // librados.h: LIBRADOS_LOCK_FLAG_MAY_RENEW = 1, LIBRADOS_LOCK_FLAG_MUST_RENEW = 2.
        let flags = if must_renew { 2 } else { 1 };
        let mut tv = libc::timeval {
            tv_sec: duration.as_secs() as libc::time_t,
            tv_usec: duration.subsec_micros() as libc::suseconds_t,
        };
        self.io
            .rados_object_lock_exclusive(object, lock, cookie, "snapq job lease", &mut tv, flags)
            .map_err(|e| rados_error("lock", &self.spec(object), &e))
    }

    /// Releases the lock if `cookie` holds it; "not held" is success.
    pub fn unlock(&self, object: &str, lock: &str, cookie: &str) -> Result<(), RbdError> {
        match self.io.rados_object_unlock(object, lock, cookie) {
            Ok(()) => Ok(()),
            Err(e) => {
                let err = rados_error("unlock", &self.spec(object), &e);
                if err.is_not_found() {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Removes a RADOS object; "already gone" is success.
    pub fn remove_object(&self, object: &str) -> Result<(), RbdError> {
        match self.io.rados_object_remove(object) {
            Ok(()) => Ok(()),
            Err(e) => {
                let err = rados_error("remove object", &self.spec(object), &e);
                if err.is_not_found() {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Names of the images in this pool's RBD trash.
    pub fn trash_image_names(&self) -> Result<Vec<String>, RbdError> {
        let entries = ffi::trash_list(&self.io)
            .map_err(|e| RbdError::new("list trash of", self.name.clone(), e))?;
        Ok(entries.into_iter().map(|e| e.name).collect())
    }
}
