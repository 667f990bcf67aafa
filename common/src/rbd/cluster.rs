//! A connection to a Ceph cluster and its pools, as one Ceph user.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::error::{RbdError, RbdErrorKind};
use super::ffi::{self, ConnectStep, IoCtx, RadosCluster};
use super::image::Image;

/// How to reach the cluster: a ceph.conf (which names the monitors and the keyring) and the
/// Ceph user id without its `client.` prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CephConfig {
    pub conf_path: String,
    pub user: String,
    /// How long one librados call may wait for a monitor or an OSD, and for the connection
    /// itself (`rados_osd_op_timeout`, `rados_mon_op_timeout`, `client_mount_timeout`), so that
    /// no call hangs forever on an unreachable cluster: it fails with `TimedOut` instead.
    /// Whole seconds, at least 1 (librados reads 0 as "no limit").
    pub op_timeout: Duration,
}

impl CephConfig {
    /// [`CephConfig::op_timeout`] unless configured otherwise.
    pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(10);

    /// A configuration with the default timeouts.
    pub fn new(conf_path: impl Into<String>, user: impl Into<String>) -> CephConfig {
        CephConfig {
            conf_path: conf_path.into(),
            user: user.into(),
            op_timeout: CephConfig::DEFAULT_OP_TIMEOUT,
        }
    }

    /// The librados options set before connecting, as (name, value) pairs.
    fn librados_options(&self) -> Vec<(&'static str, String)> {
        // Rounded up to whole seconds and never 0, which would mean "wait forever".
        let secs = self
            .op_timeout
            .as_secs()
            .saturating_add(u64::from(self.op_timeout.subsec_nanos() > 0))
            .max(1)
            .to_string();
        [
            "rados_osd_op_timeout",
            "rados_mon_op_timeout",
            "client_mount_timeout",
        ]
        .into_iter()
        .map(|option| (option, secs.clone()))
        .collect()
    }
}

/// A connected cluster. Cheap to clone; the connection closes when the last clone, and every
/// pool and image opened from it, is dropped.
///
/// The connection can be made anew ([`Cluster::reconnect`]) after this client was blocklisted:
/// every clone, and every [`Pool`] opened from any of them, then uses the new one. Images open
/// on the old connection keep it until they are closed (their calls fail).
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    config: CephConfig,
    fsid: String,
    current: Mutex<Connection>,
}

/// One connection and its pool contexts; replaced whole by a reconnect.
#[derive(Clone)]
struct Connection {
    /// Counts reconnects, so pools notice that their context is stale.
    generation: u64,
    shared: Arc<Shared>,
}

/// What every clone of a [`Cluster`] shares.
struct Shared {
    /// One I/O context per pool name, opened on first use and kept for the connection's
    /// life: a long-running worker then neither pays for a pool lookup on each job nor
    /// creates and destroys contexts while other threads use the connection. Each context
    /// holds the handle, so the order in which these fields drop does not matter.
    pools: Mutex<HashMap<String, Arc<IoCtx>>>,
    handle: Arc<RadosCluster>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("fsid", &self.inner.fsid)
            .field("user", &self.inner.config.user)
            .finish()
    }
}

impl Cluster {
    /// Connects (blocking; librados waits up to `config.op_timeout`).
    pub fn connect(config: &CephConfig) -> Result<Cluster, RbdError> {
        let (handle, fsid) = open_handle(config)?;
        Ok(Cluster {
            inner: Arc::new(Inner {
                config: config.clone(),
                fsid,
                current: Mutex::new(Connection {
                    generation: 0,
                    shared: Arc::new(Shared {
                        pools: Mutex::new(HashMap::new()),
                        handle: Arc::new(handle),
                    }),
                }),
            }),
        })
    }

    /// Replaces the connection with a new one (blocking), for a client the cluster has
    /// blocklisted (`ESHUTDOWN`): librados never recovers such a handle. The new connection
    /// must reach the same cluster.
    pub fn reconnect(&self) -> Result<(), RbdError> {
        let (handle, fsid) = open_handle(&self.inner.config)?;
        if fsid != self.inner.fsid {
            return Err(RbdError::with_kind(
                "reconnect to",
                format!(
                    "cluster {} (ceph.conf now names cluster {fsid})",
                    self.inner.fsid
                ),
                RbdErrorKind::InvalidArgument,
            ));
        }
        let mut current = self.lock_current();
        *current = Connection {
            generation: current.generation + 1,
            shared: Arc::new(Shared {
                pools: Mutex::new(HashMap::new()),
                handle: Arc::new(handle),
            }),
        };
        Ok(())
    }

    fn lock_current(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A poisoned lock only means a thread panicked holding it; the value is replaced
        // whole, so it is always consistent.
        self.inner
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn connection(&self) -> Connection {
        self.lock_current().clone()
    }

    /// The cluster's fsid, as it appears in `rbd://<fsid>/...` locations.
    pub fn fsid(&self) -> &str {
        &self.inner.fsid
    }

    pub fn user(&self) -> &str {
        &self.inner.config.user
    }

    /// Sends a JSON command to the active ceph-mgr and returns its JSON output.
    pub fn mgr_command(&self, command: &serde_json::Value) -> Result<String, RbdError> {
        let prefix = command["prefix"].as_str().unwrap_or("command").to_string();
        self.connection()
            .shared
            .handle
            .mgr_command(&command.to_string())
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

    /// This client's address as the cluster sees it (`rados_getaddrs`), e.g. for
    /// `ceph osd blocklist`.
    pub fn client_addresses(&self) -> Result<String, RbdError> {
        self.connection()
            .shared
            .handle
            .client_addresses()
            .map_err(|e| RbdError::new("read the client address of", self.fsid(), e))
    }

    /// The value this connection uses for librados option `option` (`rados_conf_get`).
    pub fn config_value(&self, option: &str) -> Result<String, RbdError> {
        self.connection()
            .shared
            .handle
            .conf_get(option)
            .map_err(|e| RbdError::new("read librados option", option, e))
    }

    /// Opens a pool, or returns the context this connection already has for it.
    pub fn pool(&self, name: &str) -> Result<Pool, RbdError> {
        let (generation, io) = self.ioctx(name)?;
        Ok(Pool {
            cluster: self.clone(),
            name: name.to_string(),
            io: Arc::new(Mutex::new((generation, io))),
        })
    }

    /// The current connection's context for pool `name`, with the connection's generation.
    fn ioctx(&self, name: &str) -> Result<(u64, Arc<IoCtx>), RbdError> {
        let connection = self.connection();
        // A poisoned lock only means another thread panicked while holding it; the map
        // itself is always consistent (one insert at a time).
        let mut pools = connection
            .shared
            .pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let io = match pools.get(name) {
            Some(io) => Arc::clone(io),
            None => {
                let io = connection
                    .shared
                    .handle
                    .ioctx(name)
                    .map_err(|e| RbdError::new("open pool", name, e))?;
                let io = Arc::new(io);
                pools.insert(name.to_string(), Arc::clone(&io));
                io
            }
        };
        Ok((connection.generation, io))
    }

    fn generation(&self) -> u64 {
        self.lock_current().generation
    }
}

/// Opens a librados handle as `config` says and reads the cluster's fsid.
fn open_handle(config: &CephConfig) -> Result<(RadosCluster, String), RbdError> {
    let target = format!(
        "cluster as client.{} with {}",
        config.user, config.conf_path
    );
    let handle = RadosCluster::connect(&config.user, &config.conf_path, &config.librados_options())
        .map_err(|failure| {
            let (op, target) = match failure.step {
                ConnectStep::Create => ("create a handle for", target.clone()),
                ConnectStep::ReadConf => ("read the configuration of", target.clone()),
                ConnectStep::SetOption(option) => {
                    ("set a librados option for", format!("{target} ({option})"))
                }
                ConnectStep::Connect => ("connect to", target.clone()),
            };
            RbdError::new(op, target, failure.errno)
        })?;
    let fsid = handle
        .fsid()
        .map_err(|e| RbdError::new("read the fsid of", target.clone(), e))?;
    Ok((handle, fsid))
}

/// An open pool. Cheap to clone. It keeps the connection alive (its I/O context holds the
/// cluster handle), and every image opened from it keeps the pool alive in turn.
///
/// After a [`Cluster::reconnect`] a pool takes the new connection's context on its next call.
#[derive(Clone)]
pub struct Pool {
    cluster: Cluster,
    name: String,
    /// The context last used, with the connection generation it belongs to.
    io: Arc<Mutex<(u64, Arc<IoCtx>)>>,
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

    /// The I/O context of the cluster's current connection.
    pub(crate) fn io(&self) -> Arc<IoCtx> {
        let mut cached = self
            .io
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if cached.0 != self.cluster.generation() {
            // On failure the stale context stays; its calls then fail and say why.
            if let Ok(fresh) = self.cluster.ioctx(&self.name) {
                *cached = fresh;
            }
        }
        Arc::clone(&cached.1)
    }

    fn spec(&self, image: &str) -> String {
        format!("{}/{}", self.name, image)
    }

    /// Creates an image with the cluster's default features.
    pub fn create_image(&self, name: &str, size: u64) -> Result<(), RbdError> {
        ffi::create(&self.io(), name, size).map_err(|e| RbdError::new("create", self.spec(name), e))
    }

    pub fn remove_image(&self, name: &str) -> Result<(), RbdError> {
        ffi::remove(&self.io(), name).map_err(|e| RbdError::new("remove", self.spec(name), e))
    }

    /// Opens an image (read-write) at its head.
    pub fn open(&self, name: &str) -> Result<Image, RbdError> {
        Image::open(&self.io(), self.name(), name, None, false)
    }

    /// Opens an image read-only, at `snap` or at its head.
    pub fn open_read_only(&self, name: &str, snap: Option<&str>) -> Result<Image, RbdError> {
        Image::open(&self.io(), self.name(), name, snap, true)
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
        ffi::clone(&parent_pool.io(), parent, snap, &self.io(), child, features).map_err(|e| {
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
        self.io()
            .lock_exclusive(object, lock, cookie, "snapq job lease", duration, flags)
            .map_err(|e| RbdError::new("lock", self.spec(object), e))
    }

    /// Releases the lock if `cookie` holds it; "not held" is success.
    pub fn unlock(&self, object: &str, lock: &str, cookie: &str) -> Result<(), RbdError> {
        match self.io().unlock(object, lock, cookie) {
            Ok(()) => Ok(()),
            Err(e) => {
                let err = RbdError::new("unlock", self.spec(object), e);
                if err.is_not_found() {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Sets extended attribute `name` of RADOS object `object` (made if missing).
    pub fn set_xattr(&self, object: &str, name: &str, value: &[u8]) -> Result<(), RbdError> {
        self.io()
            .set_xattr(object, name, value)
            .map_err(|e| RbdError::new("set xattr of", self.spec(object), e))
    }

    /// Extended attribute `name` of `object` (at most 4 KiB), None if the object or the
    /// attribute does not exist.
    pub fn xattr(&self, object: &str, name: &str) -> Result<Option<Vec<u8>>, RbdError> {
        match self.io().get_xattr(object, name, 4096) {
            Ok(value) => Ok(Some(value)),
            Err(e) if e == libc::ENOENT || e == libc::ENODATA => Ok(None),
            Err(e) => Err(RbdError::new("get xattr of", self.spec(object), e)),
        }
    }

    /// Removes a RADOS object; "already gone" is success.
    pub fn remove_object(&self, object: &str) -> Result<(), RbdError> {
        match self.io().remove_object(object) {
            Ok(()) => Ok(()),
            Err(e) => {
                let err = RbdError::new("remove object", self.spec(object), e);
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
        let entries = ffi::trash_list(&self.io())
            .map_err(|e| RbdError::new("list trash of", self.name.clone(), e))?;
        Ok(entries.into_iter().map(|e| e.name).collect())
    }
}
