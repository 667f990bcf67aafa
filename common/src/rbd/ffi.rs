//! The only `unsafe` code in snapq: hand-written bindings to the few librados and librbd
//! functions snapq needs (librbd has no maintained Rust wrapper, and the `ceph` crate cannot
//! set options before connecting), and the thin safe types around them.
//!
//! The handle types own each other in the order librados requires: a [`RawImage`] holds the
//! [`IoCtx`] it was opened from, and an [`IoCtx`] holds the [`RadosCluster`] it was made from.
//! So safe code cannot close a pool or shut the connection down under an open image: the image
//! is closed first, then the I/O context destroyed, then the connection shut down.
//!
//! Everything here returns raw errno values; `error.rs` turns them into typed errors. Calls are
//! blocking: callers keep them off the async runtime (see `run_blocking`).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::{Arc, Mutex, MutexGuard};

type RadosT = *mut c_void;
type RadosIoctxT = *mut c_void;
type RbdImageT = *mut c_void;
type ProgressFn = extern "C" fn(offset: u64, total: u64, ptr: *mut c_void) -> c_int;
type DiffFn = extern "C" fn(offset: u64, len: usize, exists: c_int, arg: *mut c_void) -> c_int;

/// `RBD_SNAP_NAMESPACE_TYPE_TRASH` of the C enum `rbd_snap_namespace_type_t`.
const RBD_SNAP_NAMESPACE_TYPE_TRASH: c_int = 2;

// The structs below mirror librbd.h field for field, under the C names; the `layout` test
// compiles the header and checks every size and offset.

/// `rbd_image_info_t`
#[repr(C)]
struct RbdImageInfo {
    size: u64,
    obj_size: u64,
    num_objs: u64,
    order: c_int,
    block_name_prefix: [c_char; 24],
    parent_pool: i64,
    parent_name: [c_char; 96],
}

/// `rbd_snap_info_t`
#[repr(C)]
struct RbdSnapInfo {
    id: u64,
    size: u64,
    name: *const c_char,
}

/// `rbd_linked_image_spec_t`
#[repr(C)]
struct RbdLinkedImageSpec {
    pool_id: i64,
    pool_name: *mut c_char,
    pool_namespace: *mut c_char,
    image_id: *mut c_char,
    image_name: *mut c_char,
    trash: bool,
}

/// `rbd_snap_spec_t`; `namespace_type` is the C enum `rbd_snap_namespace_type_t`.
#[repr(C)]
struct RbdSnapSpec {
    id: u64,
    namespace_type: c_int,
    name: *mut c_char,
}

/// `rbd_trash_image_info_t`; `source` is the C enum `rbd_trash_image_source_t`.
#[repr(C)]
struct RbdTrashImageInfo {
    id: *mut c_char,
    name: *mut c_char,
    source: c_int,
    deletion_time: libc::time_t,
    deferment_end_time: libc::time_t,
}

#[link(name = "rbd")]
extern "C" {
    fn rbd_version(major: *mut c_int, minor: *mut c_int, extra: *mut c_int);
    fn rbd_create(io: RadosIoctxT, name: *const c_char, size: u64, order: *mut c_int) -> c_int;
    fn rbd_remove(io: RadosIoctxT, name: *const c_char) -> c_int;
    fn rbd_clone(
        p_ioctx: RadosIoctxT,
        p_name: *const c_char,
        p_snapname: *const c_char,
        c_ioctx: RadosIoctxT,
        c_name: *const c_char,
        features: u64,
        c_order: *mut c_int,
    ) -> c_int;
    fn rbd_open(
        io: RadosIoctxT,
        name: *const c_char,
        image: *mut RbdImageT,
        snap_name: *const c_char,
    ) -> c_int;
    fn rbd_open_read_only(
        io: RadosIoctxT,
        name: *const c_char,
        image: *mut RbdImageT,
        snap_name: *const c_char,
    ) -> c_int;
    fn rbd_close(image: RbdImageT) -> c_int;
    fn rbd_stat(image: RbdImageT, info: *mut RbdImageInfo, infosize: usize) -> c_int;
    fn rbd_get_features(image: RbdImageT, features: *mut u64) -> c_int;
    fn rbd_snap_list(image: RbdImageT, snaps: *mut RbdSnapInfo, max_snaps: *mut c_int) -> c_int;
    fn rbd_snap_list_end(snaps: *mut RbdSnapInfo);
    fn rbd_snap_exists(image: RbdImageT, snapname: *const c_char, exists: *mut bool) -> c_int;
    fn rbd_snap_create(image: RbdImageT, snapname: *const c_char) -> c_int;
    fn rbd_snap_remove(image: RbdImageT, snapname: *const c_char) -> c_int;
    fn rbd_snap_remove_by_id(image: RbdImageT, snap_id: u64) -> c_int;
    fn rbd_snap_get_namespace_type(
        image: RbdImageT,
        snap_id: u64,
        namespace_type: *mut c_int,
    ) -> c_int;
    fn rbd_snap_get_trash_namespace(
        image: RbdImageT,
        snap_id: u64,
        original_name: *mut c_char,
        max_length: usize,
    ) -> c_int;
    fn rbd_snap_protect(image: RbdImageT, snap_name: *const c_char) -> c_int;
    fn rbd_snap_unprotect(image: RbdImageT, snap_name: *const c_char) -> c_int;
    fn rbd_snap_is_protected(
        image: RbdImageT,
        snap_name: *const c_char,
        is_protected: *mut c_int,
    ) -> c_int;
    fn rbd_flatten_with_progress(image: RbdImageT, cb: ProgressFn, cbdata: *mut c_void) -> c_int;
    fn rbd_metadata_get(
        image: RbdImageT,
        key: *const c_char,
        value: *mut c_char,
        val_len: *mut usize,
    ) -> c_int;
    fn rbd_metadata_set(image: RbdImageT, key: *const c_char, value: *const c_char) -> c_int;
    fn rbd_get_parent(
        image: RbdImageT,
        parent_image: *mut RbdLinkedImageSpec,
        parent_snap: *mut RbdSnapSpec,
    ) -> c_int;
    fn rbd_linked_image_spec_cleanup(image: *mut RbdLinkedImageSpec);
    fn rbd_linked_image_spec_list_cleanup(images: *mut RbdLinkedImageSpec, num_images: usize);
    fn rbd_snap_spec_cleanup(snap: *mut RbdSnapSpec);
    fn rbd_list_children3(
        image: RbdImageT,
        images: *mut RbdLinkedImageSpec,
        max_images: *mut usize,
    ) -> c_int;
    fn rbd_read(image: RbdImageT, ofs: u64, len: usize, buf: *mut c_char) -> isize;
    fn rbd_write(image: RbdImageT, ofs: u64, len: usize, buf: *const c_char) -> isize;
    fn rbd_flush(image: RbdImageT) -> c_int;
    fn rbd_diff_iterate2(
        image: RbdImageT,
        fromsnapname: *const c_char,
        ofs: u64,
        len: u64,
        include_parent: u8,
        whole_object: u8,
        cb: DiffFn,
        arg: *mut c_void,
    ) -> c_int;
    fn rbd_trash_list(io: RadosIoctxT, entries: *mut RbdTrashImageInfo, num: *mut usize) -> c_int;
    fn rbd_trash_list_cleanup(entries: *mut RbdTrashImageInfo, num: usize);
}

#[link(name = "rados")]
extern "C" {
    fn rados_create2(
        cluster: *mut RadosT,
        cluster_name: *const c_char,
        name: *const c_char,
        flags: u64,
    ) -> c_int;
    fn rados_conf_read_file(cluster: RadosT, path: *const c_char) -> c_int;
    fn rados_conf_set(cluster: RadosT, option: *const c_char, value: *const c_char) -> c_int;
    fn rados_conf_get(
        cluster: RadosT,
        option: *const c_char,
        buf: *mut c_char,
        len: usize,
    ) -> c_int;
    fn rados_connect(cluster: RadosT) -> c_int;
    fn rados_shutdown(cluster: RadosT);
    fn rados_cluster_fsid(cluster: RadosT, buf: *mut c_char, len: usize) -> c_int;
    fn rados_getaddrs(cluster: RadosT, addrs: *mut *mut c_char) -> c_int;
    fn rados_ioctx_create(cluster: RadosT, pool_name: *const c_char, io: *mut RadosIoctxT)
        -> c_int;
    fn rados_ioctx_destroy(io: RadosIoctxT);
    fn rados_lock_exclusive(
        io: RadosIoctxT,
        oid: *const c_char,
        name: *const c_char,
        cookie: *const c_char,
        desc: *const c_char,
        duration: *mut libc::timeval,
        flags: u8,
    ) -> c_int;
    fn rados_unlock(
        io: RadosIoctxT,
        oid: *const c_char,
        name: *const c_char,
        cookie: *const c_char,
    ) -> c_int;
    fn rados_remove(io: RadosIoctxT, oid: *const c_char) -> c_int;
    fn rados_setxattr(
        io: RadosIoctxT,
        oid: *const c_char,
        name: *const c_char,
        buf: *const c_char,
        len: usize,
    ) -> c_int;
    fn rados_getxattr(
        io: RadosIoctxT,
        oid: *const c_char,
        name: *const c_char,
        buf: *mut c_char,
        len: usize,
    ) -> c_int;
    fn rados_mgr_command(
        cluster: RadosT,
        cmd: *mut *const c_char,
        cmdlen: usize,
        inbuf: *const c_char,
        inbuflen: usize,
        outbuf: *mut *mut c_char,
        outbuflen: *mut usize,
        outs: *mut *mut c_char,
        outslen: *mut usize,
    ) -> c_int;
    fn rados_buffer_free(buf: *mut c_char);
}

/// A negative errno as librbd/librados return it, made positive.
pub type Errno = i32;

fn check(rc: c_int) -> Result<(), Errno> {
    if rc < 0 {
        Err(-rc)
    } else {
        Ok(())
    }
}

/// A Rust string as a C string; an interior NUL is reported as EINVAL (names are validated
/// long before they get here, so this is a last line of defence).
fn c_string(s: &str) -> Result<CString, Errno> {
    CString::new(s).map_err(|_| libc::EINVAL)
}

fn opt_c_string(s: Option<&str>) -> Result<Option<CString>, Errno> {
    s.map(c_string).transpose()
}

fn opt_ptr(s: &Option<CString>) -> *const c_char {
    s.as_ref().map_or(ptr::null(), |c| c.as_ptr())
}

/// Copies a C string owned by librbd; NULL becomes "".
fn owned(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: librbd hands out NUL-terminated strings that stay valid until the matching
    // cleanup call, which every caller here makes only after copying.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The text of a NUL-terminated string librados wrote into `buf` (all of `buf` if it holds
/// no NUL).
fn text_until_nul(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Serialises connecting and shutting down cluster handles in this process: librados does not
/// cope with `rados_connect` and `rados_shutdown` racing each other (the process aborts with a
/// `std::system_error`).
fn lifecycle_lock() -> MutexGuard<'static, ()> {
    static LIFECYCLE: Mutex<()> = Mutex::new(());
    // The guarded value is `()`: a panic while it was held leaves nothing inconsistent.
    LIFECYCLE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The step of [`RadosCluster::connect`] that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectStep {
    /// `rados_create2`: e.g. an invalid user name.
    Create,
    /// `rados_conf_read_file`: the ceph.conf is missing or malformed.
    ReadConf,
    /// `rados_conf_set` of this option.
    SetOption(String),
    /// `rados_connect`: monitors unreachable, unknown user, no keyring...
    Connect,
}

/// A failed [`RadosCluster::connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectFailure {
    pub step: ConnectStep,
    pub errno: Errno,
}

/// A connected librados cluster handle (`rados_t`); shut down on drop, which happens only
/// after every [`IoCtx`] made from it is gone (each holds an `Arc` of it).
pub struct RadosCluster {
    handle: RadosT,
}

// SAFETY: a connected rados_t may be used from any thread, concurrently (librados.h: the
// cluster handle is thread-safe); the raw pointer is the only reason it is not Send/Sync.
unsafe impl Send for RadosCluster {}
// SAFETY: as above; no method changes the handle's configuration after connecting.
unsafe impl Sync for RadosCluster {}

impl Drop for RadosCluster {
    fn drop(&mut self) {
        let _lifecycle = lifecycle_lock();
        // SAFETY: the handle came from a successful rados_create2 and is shut down exactly
        // once; no I/O context made from it is left (each holds an Arc of this handle).
        unsafe { rados_shutdown(self.handle) };
    }
}

impl RadosCluster {
    /// Creates a handle for `client.<user>`, reads `conf_path`, sets `options` (overriding the
    /// file), and connects. Blocks until connected or `client_mount_timeout` has passed.
    pub fn connect(
        user: &str,
        conf_path: &str,
        options: &[(&str, String)],
    ) -> Result<RadosCluster, ConnectFailure> {
        let fail = |step: ConnectStep| move |errno: Errno| ConnectFailure { step, errno };
        let name = c_string(&format!("client.{user}")).map_err(fail(ConnectStep::Create))?;
        let conf = c_string(conf_path).map_err(fail(ConnectStep::ReadConf))?;
        let mut c_options = Vec::with_capacity(options.len());
        for (option, value) in options {
            let set_option = || fail(ConnectStep::SetOption(option.to_string()));
            let c_option = c_string(option).map_err(set_option())?;
            let c_value = c_string(value).map_err(set_option())?;
            c_options.push((c_option, c_value, *option));
        }

        let _lifecycle = lifecycle_lock();
        let mut handle: RadosT = ptr::null_mut();
        // SAFETY: valid out-pointer; NUL-terminated cluster and entity names; no flags.
        check(unsafe { rados_create2(&mut handle, c"ceph".as_ptr(), name.as_ptr(), 0) })
            .map_err(fail(ConnectStep::Create))?;
        if handle.is_null() {
            return Err(fail(ConnectStep::Create)(libc::ENOMEM));
        }
        // From here on, dropping `cluster` on an error releases the created handle
        // (rados_shutdown also frees a handle that never connected).
        let cluster = Unconnected(handle);
        // SAFETY: created, unconnected handle; NUL-terminated path.
        check(unsafe { rados_conf_read_file(cluster.0, conf.as_ptr()) })
            .map_err(fail(ConnectStep::ReadConf))?;
        for (option, value, name) in &c_options {
            // SAFETY: created, unconnected handle (options may only be set before connecting);
            // NUL-terminated option and value.
            check(unsafe { rados_conf_set(cluster.0, option.as_ptr(), value.as_ptr()) })
                .map_err(fail(ConnectStep::SetOption(name.to_string())))?;
        }
        // SAFETY: created, configured handle, connected once.
        check(unsafe { rados_connect(cluster.0) }).map_err(fail(ConnectStep::Connect))?;
        let handle = cluster.0;
        std::mem::forget(cluster);
        Ok(RadosCluster { handle })
    }

    /// The cluster's fsid.
    pub fn fsid(&self) -> Result<String, Errno> {
        let mut buf = [0u8; 64];
        // SAFETY: connected handle; a buffer of buf.len() bytes, which librados NUL-terminates.
        let rc = unsafe { rados_cluster_fsid(self.handle, buf.as_mut_ptr().cast(), buf.len()) };
        check(rc)?;
        Ok(text_until_nul(&buf))
    }

    /// This client's own address(es), as the cluster sees it (what `ceph osd blocklist` takes).
    pub fn client_addresses(&self) -> Result<String, Errno> {
        let mut addrs: *mut c_char = ptr::null_mut();
        // SAFETY: connected handle; valid out-pointer; librados allocates the string.
        check(unsafe { rados_getaddrs(self.handle, &mut addrs) })?;
        let text = owned(addrs);
        // SAFETY: the string came from rados_getaddrs, which documents freeing it with
        // rados_buffer_free; it is freed once.
        unsafe { rados_buffer_free(addrs) };
        Ok(text)
    }

    /// The value librados uses for configuration option `option`.
    pub fn conf_get(&self, option: &str) -> Result<String, Errno> {
        let option = c_string(option)?;
        let mut capacity = 256;
        loop {
            let mut buf = vec![0u8; capacity];
            // SAFETY: connected handle; NUL-terminated option; a buffer of buf.len() bytes,
            // which librados fills with a NUL-terminated value or rejects as too short.
            let rc = unsafe {
                rados_conf_get(
                    self.handle,
                    option.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if rc == -libc::ENAMETOOLONG && capacity < 1 << 20 {
                capacity *= 4;
                continue;
            }
            check(rc)?;
            return Ok(text_until_nul(&buf));
        }
    }

    /// Opens an I/O context on `pool`; it keeps this connection alive.
    pub fn ioctx(self: &Arc<Self>, pool: &str) -> Result<IoCtx, Errno> {
        let pool = c_string(pool)?;
        let mut handle: RadosIoctxT = ptr::null_mut();
        // SAFETY: connected handle; NUL-terminated pool name; valid out-pointer.
        check(unsafe { rados_ioctx_create(self.handle, pool.as_ptr(), &mut handle) })?;
        Ok(IoCtx {
            handle,
            _cluster: Arc::clone(self),
        })
    }

    /// Sends a JSON command to the active ceph-mgr; returns (output, status text).
    pub fn mgr_command(&self, command: &str) -> Result<(String, String), (Errno, String)> {
        let command = c_string(command).map_err(|e| (e, String::new()))?;
        let mut cmds = [command.as_ptr()];
        let (mut outbuf, mut outbuflen, mut outs, mut outslen) =
            (ptr::null_mut(), 0usize, ptr::null_mut(), 0usize);
        // SAFETY: connected cluster handle; one NUL-terminated command; empty input;
        // out-pointers valid; the returned buffers are freed by take_buffer.
        let rc = unsafe {
            rados_mgr_command(
                self.handle,
                cmds.as_mut_ptr(),
                1,
                ptr::null(),
                0,
                &mut outbuf,
                &mut outbuflen,
                &mut outs,
                &mut outslen,
            )
        };
        let (out, status) = (take_buffer(outbuf, outbuflen), take_buffer(outs, outslen));
        if rc < 0 {
            Err((-rc, status))
        } else {
            Ok((out, status))
        }
    }
}

/// A created but not (yet) connected handle, released if connecting fails. The caller holds
/// the lifecycle lock.
struct Unconnected(RadosT);

impl Drop for Unconnected {
    fn drop(&mut self) {
        // SAFETY: a handle from a successful rados_create2 that no RadosCluster owns (the
        // success path forgets this guard); rados_shutdown frees it, connected or not.
        unsafe { rados_shutdown(self.0) };
    }
}

/// Copies and frees a buffer librados allocated.
fn take_buffer(buf: *mut c_char, len: usize) -> String {
    if buf.is_null() {
        return String::new();
    }
    // SAFETY: librados returned `len` valid bytes at `buf`, freed right after copying.
    let text = unsafe { std::slice::from_raw_parts(buf as *const u8, len) };
    let text = String::from_utf8_lossy(text).into_owned();
    // SAFETY: `buf` came from librados and is freed once.
    unsafe { rados_buffer_free(buf) };
    text
}

/// An I/O context on one pool (`rados_ioctx_t`); destroyed on drop, which happens only after
/// every [`RawImage`] opened from it is closed (each holds an `Arc` of it). It keeps its
/// [`RadosCluster`] alive.
pub struct IoCtx {
    handle: RadosIoctxT,
    // Dropped after `Drop::drop` destroyed `handle`.
    _cluster: Arc<RadosCluster>,
}

// SAFETY: librados I/O contexts may be used from several threads at once as long as nobody
// changes their settings (snapshot, locator, namespace), which nothing here does.
unsafe impl Send for IoCtx {}
// SAFETY: as above.
unsafe impl Sync for IoCtx {}

impl Drop for IoCtx {
    fn drop(&mut self) {
        // SAFETY: the handle came from a successful rados_ioctx_create, is destroyed exactly
        // once, and no image opened from it is still open; the cluster is still connected
        // (`_cluster` is dropped after this).
        unsafe { rados_ioctx_destroy(self.handle) };
    }
}

impl IoCtx {
    /// Takes (or renews, per `flags`) the exclusive RADOS lock `lock` on `object` for
    /// `duration`, as the holder `cookie`.
    pub fn lock_exclusive(
        &self,
        object: &str,
        lock: &str,
        cookie: &str,
        description: &str,
        duration: std::time::Duration,
        flags: u8,
    ) -> Result<(), Errno> {
        let (object, lock, cookie, description) = (
            c_string(object)?,
            c_string(lock)?,
            c_string(cookie)?,
            c_string(description)?,
        );
        let mut tv = libc::timeval {
            tv_sec: libc::time_t::try_from(duration.as_secs()).map_err(|_| libc::EINVAL)?,
            // Below 1_000_000: fits every suseconds_t.
            tv_usec: duration.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: valid ioctx; NUL-terminated strings; a valid timeval librados only reads.
        check(unsafe {
            rados_lock_exclusive(
                self.handle,
                object.as_ptr(),
                lock.as_ptr(),
                cookie.as_ptr(),
                description.as_ptr(),
                &mut tv,
                flags,
            )
        })
    }

    /// Releases `lock` on `object` held as `cookie`.
    pub fn unlock(&self, object: &str, lock: &str, cookie: &str) -> Result<(), Errno> {
        let (object, lock, cookie) = (c_string(object)?, c_string(lock)?, c_string(cookie)?);
        // SAFETY: valid ioctx; NUL-terminated strings.
        check(unsafe { rados_unlock(self.handle, object.as_ptr(), lock.as_ptr(), cookie.as_ptr()) })
    }

    /// Sets extended attribute `name` of a RADOS object (creating the object if needed).
    pub fn set_xattr(&self, object: &str, name: &str, value: &[u8]) -> Result<(), Errno> {
        let (object, name) = (c_string(object)?, c_string(name)?);
        // SAFETY: valid ioctx; NUL-terminated strings; a buffer of `value.len()` bytes.
        check(unsafe {
            rados_setxattr(
                self.handle,
                object.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast::<c_char>(),
                value.len(),
            )
        })
    }

    /// Extended attribute `name` of a RADOS object, at most `max` bytes of it.
    pub fn get_xattr(&self, object: &str, name: &str, max: usize) -> Result<Vec<u8>, Errno> {
        let (object, name) = (c_string(object)?, c_string(name)?);
        let mut buf = vec![0u8; max];
        // SAFETY: valid ioctx; NUL-terminated strings; a writable buffer of `max` bytes.
        let rc = unsafe {
            rados_getxattr(
                self.handle,
                object.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast::<c_char>(),
                max,
            )
        };
        if rc < 0 {
            return Err(-rc);
        }
        buf.truncate(usize::try_from(rc).unwrap_or(0).min(max));
        Ok(buf)
    }

    /// Removes a RADOS object.
    pub fn remove_object(&self, object: &str) -> Result<(), Errno> {
        let object = c_string(object)?;
        // SAFETY: valid ioctx; NUL-terminated name.
        check(unsafe { rados_remove(self.handle, object.as_ptr()) })
    }
}

/// Makes glibc serve every allocation of `bytes` or more with a mapping of its own, given
/// back to the OS when freed. Without it glibc raises that threshold as large blocks are freed,
/// and then keeps freed multi-MiB blocks (librados allocates one per read reply) resident in
/// each thread's arena. Returns whether glibc took the setting.
pub fn set_malloc_mmap_threshold(bytes: usize) -> bool {
    let Ok(bytes) = c_int::try_from(bytes) else {
        return false;
    };
    // SAFETY: mallopt only changes allocator parameters; M_MMAP_THRESHOLD takes a byte count.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) == 1 }
}

/// librbd's version triple.
pub fn version() -> (i32, i32, i32) {
    let (mut major, mut minor, mut extra) = (0, 0, 0);
    // SAFETY: three valid out-pointers.
    unsafe { rbd_version(&mut major, &mut minor, &mut extra) };
    (major, minor, extra)
}

pub fn create(io: &IoCtx, name: &str, size: u64) -> Result<(), Errno> {
    let name = c_string(name)?;
    let mut order: c_int = 0;
    // SAFETY: valid ioctx, NUL-terminated name, valid out-pointer.
    check(unsafe { rbd_create(io.handle, name.as_ptr(), size, &mut order) })
}

pub fn remove(io: &IoCtx, name: &str) -> Result<(), Errno> {
    let name = c_string(name)?;
    // SAFETY: valid ioctx and NUL-terminated name.
    check(unsafe { rbd_remove(io.handle, name.as_ptr()) })
}

pub fn clone(
    parent_io: &IoCtx,
    parent: &str,
    parent_snap: &str,
    child_io: &IoCtx,
    child: &str,
    features: u64,
) -> Result<(), Errno> {
    let (parent, parent_snap, child) =
        (c_string(parent)?, c_string(parent_snap)?, c_string(child)?);
    let mut order: c_int = 0;
    // SAFETY: valid ioctxs, NUL-terminated names, valid out-pointer.
    check(unsafe {
        rbd_clone(
            parent_io.handle,
            parent.as_ptr(),
            parent_snap.as_ptr(),
            child_io.handle,
            child.as_ptr(),
            features,
            &mut order,
        )
    })
}

/// One entry of a pool's RBD trash.
pub struct TrashEntry {
    pub name: String,
}

pub fn trash_list(io: &IoCtx) -> Result<Vec<TrashEntry>, Errno> {
    let mut capacity: usize = 16;
    loop {
        let mut entries: Vec<RbdTrashImageInfo> = Vec::with_capacity(capacity);
        let mut num = capacity;
        // SAFETY: the buffer holds `num` entries; librbd writes at most that many.
        let rc = unsafe { rbd_trash_list(io.handle, entries.as_mut_ptr(), &mut num) };
        if rc == -libc::ERANGE {
            capacity = num.max(capacity * 2);
            continue;
        }
        check(rc)?;
        let count = num.min(capacity);
        // SAFETY: librbd initialised `num` entries, never more than the buffer holds.
        unsafe { entries.set_len(count) };
        let out = entries
            .iter()
            .map(|e| TrashEntry {
                name: owned(e.name),
            })
            .collect();
        // SAFETY: releases the strings librbd allocated for these entries.
        unsafe { rbd_trash_list_cleanup(entries.as_mut_ptr(), count) };
        return Ok(out);
    }
}

/// Image size facts from `rbd_stat`.
pub struct Stat {
    pub size: u64,
    pub object_size: u64,
}

/// The parent of a clone.
pub struct Parent {
    pub pool: String,
    pub image: String,
    pub snap: String,
    pub image_in_trash: bool,
}

/// A child of a snapshot.
pub struct Child {
    pub pool: String,
    pub image: String,
    pub in_trash: bool,
}

/// A snapshot as `rbd_snap_list` reports it.
pub struct SnapInfo {
    pub id: u64,
    pub size: u64,
    pub name: String,
}

/// The progress callback of [`RawImage::flatten`]. `Send`: librbd calls it from its own
/// threads while the flatten call blocks.
pub type Progress<'a> = &'a mut (dyn FnMut(u64, u64) -> bool + Send);

/// The extent callback of [`RawImage::diff_iterate`]. `Send`: librbd calls it from its own
/// threads while the iterate call blocks.
pub type DiffExtent<'a> = &'a mut (dyn FnMut(u64, usize, bool) + Send);

/// What a callback trampoline receives as its `void *`: the Rust callback behind a mutex, so
/// that calls librbd makes from several threads at once (object completions finish in
/// parallel) still reach the `FnMut` one at a time.
struct CallbackData<F>(Mutex<F>);

impl<F> CallbackData<F> {
    fn new(callback: F) -> Self {
        CallbackData(Mutex::new(callback))
    }

    fn as_arg(&self) -> *mut c_void {
        self as *const Self as *mut c_void
    }

    /// Runs `call` on the callback; a panic is caught (it must not unwind into C) and
    /// reported as `Err`.
    fn call<R>(&self, call: impl FnOnce(&mut F) -> R) -> Result<R, ()> {
        // Panics are caught while the lock is held, so it is never poisoned; recovering from
        // poison anyway keeps a bug elsewhere from turning into a panic across C.
        let mut callback = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        catch_unwind(AssertUnwindSafe(|| call(&mut callback))).map_err(|_| ())
    }
}

/// An open librbd image; closed on drop, before the [`IoCtx`] it holds is released.
pub struct RawImage {
    handle: RbdImageT,
    // Dropped after `Drop::drop` closed `handle`.
    _io: Arc<IoCtx>,
}

// SAFETY: a librbd image handle may be used from any thread, one call at a time; `RawImage`
// is not Sync, so `&mut`/ownership guarantees that. The `Arc<IoCtx>` it holds is Send.
unsafe impl Send for RawImage {}

impl Drop for RawImage {
    fn drop(&mut self) {
        // SAFETY: the handle came from a successful rbd_open and is closed exactly once, while
        // its I/O context and cluster are still alive (`_io` is dropped after this).
        unsafe { rbd_close(self.handle) };
    }
}

impl RawImage {
    /// Opens image `name` (at `snap`, or its head) in `io`'s pool; the image keeps `io` alive.
    pub fn open(
        io: &Arc<IoCtx>,
        name: &str,
        snap: Option<&str>,
        read_only: bool,
    ) -> Result<Self, Errno> {
        let name = c_string(name)?;
        let snap = opt_c_string(snap)?;
        let mut handle: RbdImageT = ptr::null_mut();
        // SAFETY: valid ioctx, NUL-terminated strings (snap may be NULL), valid out-pointer.
        let rc = unsafe {
            if read_only {
                rbd_open_read_only(io.handle, name.as_ptr(), &mut handle, opt_ptr(&snap))
            } else {
                rbd_open(io.handle, name.as_ptr(), &mut handle, opt_ptr(&snap))
            }
        };
        check(rc)?;
        Ok(RawImage {
            handle,
            _io: Arc::clone(io),
        })
    }

    pub fn stat(&self) -> Result<Stat, Errno> {
        // SAFETY: RbdImageInfo is plain old data; zeroed is a valid value.
        let mut info: RbdImageInfo = unsafe { std::mem::zeroed() };
        // SAFETY: open handle, out-pointer to a struct of the given size.
        check(unsafe { rbd_stat(self.handle, &mut info, std::mem::size_of::<RbdImageInfo>()) })?;
        Ok(Stat {
            size: info.size,
            object_size: info.obj_size,
        })
    }

    pub fn features(&self) -> Result<u64, Errno> {
        let mut features = 0u64;
        // SAFETY: open handle, valid out-pointer.
        check(unsafe { rbd_get_features(self.handle, &mut features) })?;
        Ok(features)
    }

    pub fn snap_list(&self) -> Result<Vec<SnapInfo>, Errno> {
        let mut capacity: c_int = 16;
        loop {
            let mut snaps: Vec<RbdSnapInfo> = Vec::with_capacity(capacity as usize + 1);
            let mut max = capacity;
            // SAFETY: buffer of `max` entries (+1 for the terminator librbd writes).
            let rc = unsafe { rbd_snap_list(self.handle, snaps.as_mut_ptr(), &mut max) };
            if rc == -libc::ERANGE {
                capacity = max.max(capacity * 2);
                continue;
            }
            check(rc)?;
            let count = rc as usize;
            // SAFETY: librbd initialised `count` entries.
            unsafe { snaps.set_len(count) };
            let out = snaps
                .iter()
                .map(|s| SnapInfo {
                    id: s.id,
                    size: s.size,
                    name: owned(s.name),
                })
                .collect();
            // SAFETY: frees the names of the listed snapshots.
            unsafe { rbd_snap_list_end(snaps.as_mut_ptr()) };
            return Ok(out);
        }
    }

    pub fn snap_exists(&self, name: &str) -> Result<bool, Errno> {
        let name = c_string(name)?;
        let mut exists = false;
        // SAFETY: open handle, NUL-terminated name, valid out-pointer.
        check(unsafe { rbd_snap_exists(self.handle, name.as_ptr(), &mut exists) })?;
        Ok(exists)
    }

    pub fn snap_create(&mut self, name: &str) -> Result<(), Errno> {
        let name = c_string(name)?;
        // SAFETY: open handle, NUL-terminated name.
        check(unsafe { rbd_snap_create(self.handle, name.as_ptr()) })
    }

    pub fn snap_remove(&mut self, name: &str) -> Result<(), Errno> {
        let name = c_string(name)?;
        // SAFETY: open handle, NUL-terminated name.
        check(unsafe { rbd_snap_remove(self.handle, name.as_ptr()) })
    }

    /// Removes a snapshot by id: the way to finish the removal of one in the trash namespace.
    pub fn snap_remove_by_id(&mut self, snap_id: u64) -> Result<(), Errno> {
        // SAFETY: open handle; librbd checks the id.
        check(unsafe { rbd_snap_remove_by_id(self.handle, snap_id) })
    }

    /// The name a snapshot had before librbd moved it to the trash namespace, or None if it is
    /// not in that namespace. librbd moves every snapshot it removes there first, and leaves
    /// it there while clones still use it or when the removal is interrupted.
    pub fn snap_trashed_name(&self, snap_id: u64) -> Result<Option<String>, Errno> {
        let mut namespace: c_int = 0;
        // SAFETY: open handle, valid out-pointer.
        check(unsafe { rbd_snap_get_namespace_type(self.handle, snap_id, &mut namespace) })?;
        if namespace != RBD_SNAP_NAMESPACE_TYPE_TRASH {
            return Ok(None);
        }
        let mut buf = vec![0u8; 4096];
        // SAFETY: open handle; `buf` holds `buf.len()` bytes and librbd writes a NUL-terminated
        // name of at most that many.
        check(unsafe {
            rbd_snap_get_trash_namespace(
                self.handle,
                snap_id,
                buf.as_mut_ptr().cast::<c_char>(),
                buf.len(),
            )
        })?;
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        Ok(Some(String::from_utf8_lossy(&buf[..end]).into_owned()))
    }

    pub fn snap_protect(&mut self, name: &str) -> Result<(), Errno> {
        let name = c_string(name)?;
        // SAFETY: open handle, NUL-terminated name.
        check(unsafe { rbd_snap_protect(self.handle, name.as_ptr()) })
    }

    pub fn snap_unprotect(&mut self, name: &str) -> Result<(), Errno> {
        let name = c_string(name)?;
        // SAFETY: open handle, NUL-terminated name.
        check(unsafe { rbd_snap_unprotect(self.handle, name.as_ptr()) })
    }

    pub fn snap_is_protected(&self, name: &str) -> Result<bool, Errno> {
        let name = c_string(name)?;
        let mut protected: c_int = 0;
        // SAFETY: open handle, NUL-terminated name, valid out-pointer.
        check(unsafe { rbd_snap_is_protected(self.handle, name.as_ptr(), &mut protected) })?;
        Ok(protected != 0)
    }

    /// The value of image metadata `key`, or None if the image has no such key.
    pub fn metadata_get(&self, key: &str) -> Result<Option<String>, Errno> {
        let key = c_string(key)?;
        let mut capacity: usize = 256;
        loop {
            let mut buf: Vec<u8> = vec![0; capacity];
            let mut len = capacity;
            // SAFETY: open handle, NUL-terminated key, a buffer of `len` bytes and its length.
            let rc = unsafe {
                rbd_metadata_get(
                    self.handle,
                    key.as_ptr(),
                    buf.as_mut_ptr().cast::<c_char>(),
                    &mut len,
                )
            };
            if rc == -libc::ERANGE && len > capacity && len <= 1 << 20 {
                capacity = len;
                continue;
            }
            if rc == -libc::ENOENT {
                return Ok(None);
            }
            check(rc)?;
            // librbd writes the value NUL-terminated; `len` counts the terminator.
            let end = buf
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(len.min(buf.len()));
            buf.truncate(end);
            return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
        }
    }

    /// Sets image metadata `key` to `value`.
    pub fn metadata_set(&mut self, key: &str, value: &str) -> Result<(), Errno> {
        let (key, value) = (c_string(key)?, c_string(value)?);
        // SAFETY: open handle, NUL-terminated key and value.
        check(unsafe { rbd_metadata_set(self.handle, key.as_ptr(), value.as_ptr()) })
    }

    /// Flattens the clone, calling `progress(done, total)` as librbd reports it.
    pub fn flatten(&mut self, progress: Progress<'_>) -> Result<(), Errno> {
        extern "C" fn trampoline(offset: u64, total: u64, data: *mut c_void) -> c_int {
            // SAFETY: `data` is the CallbackData passed below, which outlives the call that
            // makes these callbacks; only shared references to it are made.
            let progress = unsafe { &*(data as *const CallbackData<Progress<'_>>) };
            // The callback answers whether to go on; librbd stops the flatten at a negative
            // return. A panicking callback (caught) does not stop it.
            match progress.call(|progress| progress(offset, total)) {
                Ok(false) => -libc::ECANCELED,
                Ok(true) | Err(()) => 0,
            }
        }
        let data = CallbackData::new(progress);
        // SAFETY: open handle; callback and data live until the call returns, and librbd
        // makes no callback after it returned.
        check(unsafe { rbd_flatten_with_progress(self.handle, trampoline, data.as_arg()) })
    }

    /// The clone's parent, or None if the image has none.
    pub fn parent(&self) -> Result<Option<Parent>, Errno> {
        // SAFETY: plain C structs of pointers and integers; zeroed is valid.
        let mut image: RbdLinkedImageSpec = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut snap: RbdSnapSpec = unsafe { std::mem::zeroed() };
        // SAFETY: open handle, valid out-pointers.
        let rc = unsafe { rbd_get_parent(self.handle, &mut image, &mut snap) };
        if rc == -libc::ENOENT {
            return Ok(None);
        }
        check(rc)?;
        let parent = Parent {
            pool: owned(image.pool_name),
            image: owned(image.image_name),
            snap: owned(snap.name),
            image_in_trash: image.trash,
        };
        // SAFETY: releases what rbd_get_parent allocated, after copying it.
        unsafe {
            rbd_linked_image_spec_cleanup(&mut image);
            rbd_snap_spec_cleanup(&mut snap);
        }
        Ok(Some(parent))
    }

    /// Children of the snapshot this image was opened at.
    pub fn children(&self) -> Result<Vec<Child>, Errno> {
        let mut capacity: usize = 8;
        loop {
            let mut specs: Vec<RbdLinkedImageSpec> = Vec::with_capacity(capacity);
            let mut max = capacity;
            // SAFETY: buffer of `max` entries.
            let rc = unsafe { rbd_list_children3(self.handle, specs.as_mut_ptr(), &mut max) };
            if rc == -libc::ERANGE {
                capacity = max.max(capacity * 2);
                continue;
            }
            check(rc)?;
            // SAFETY: librbd initialised `max` entries.
            unsafe { specs.set_len(max) };
            let out = specs
                .iter()
                .map(|c| Child {
                    pool: owned(c.pool_name),
                    image: owned(c.image_name),
                    in_trash: c.trash,
                })
                .collect();
            // SAFETY: releases the entries' strings.
            unsafe { rbd_linked_image_spec_list_cleanup(specs.as_mut_ptr(), max) };
            return Ok(out);
        }
    }

    /// Reads into `buf` at `offset`; returns the bytes read.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        // SAFETY: open handle; buf is valid for buf.len() bytes of writes.
        let rc = unsafe {
            rbd_read(
                self.handle,
                offset,
                buf.len(),
                buf.as_mut_ptr() as *mut c_char,
            )
        };
        if rc < 0 {
            return Err(-(rc as i32));
        }
        Ok(rc as usize)
    }

    /// Writes `buf` at `offset`; returns the bytes written.
    pub fn write(&mut self, offset: u64, buf: &[u8]) -> Result<usize, Errno> {
        // SAFETY: open handle; buf is valid for buf.len() bytes of reads.
        let rc = unsafe {
            rbd_write(
                self.handle,
                offset,
                buf.len(),
                buf.as_ptr() as *const c_char,
            )
        };
        if rc < 0 {
            return Err(-(rc as i32));
        }
        Ok(rc as usize)
    }

    pub fn flush(&mut self) -> Result<(), Errno> {
        // SAFETY: open handle.
        check(unsafe { rbd_flush(self.handle) })
    }

    /// Calls `extent(offset, len, exists)` for each changed extent in `[offset, offset+len)`
    /// since `from_snap` (None: since creation).
    pub fn diff_iterate(
        &self,
        from_snap: Option<&str>,
        offset: u64,
        len: u64,
        include_parent: bool,
        whole_object: bool,
        extent: DiffExtent<'_>,
    ) -> Result<(), Errno> {
        extern "C" fn trampoline(
            offset: u64,
            len: usize,
            exists: c_int,
            data: *mut c_void,
        ) -> c_int {
            // SAFETY: `data` is the CallbackData passed below, which outlives the call that
            // makes these callbacks; only shared references to it are made.
            let extent = unsafe { &*(data as *const CallbackData<DiffExtent<'_>>) };
            match extent.call(|extent| extent(offset, len, exists != 0)) {
                Ok(()) => 0,
                Err(()) => -libc::ECANCELED,
            }
        }
        let from_snap = opt_c_string(from_snap)?;
        let data = CallbackData::new(extent);
        // SAFETY: open handle; callback and data live until the call returns, and librbd
        // makes no callback after it returned.
        check(unsafe {
            rbd_diff_iterate2(
                self.handle,
                opt_ptr(&from_snap),
                offset,
                len,
                include_parent as u8,
                whole_object as u8,
                trampoline,
                data.as_arg(),
            )
        })
    }
}

/// The structs above against the C headers: a C program compiled with the system compiler
/// prints each struct's size and alignment and each field's offset and size, and the test
/// compares them with what Rust lays out.
#[cfg(test)]
mod layout {
    use super::*;
    use std::fmt::Write as _;
    use std::mem::{align_of, offset_of, size_of};
    use std::path::PathBuf;
    use std::process::Command;

    /// A Rust struct's layout under its C name.
    struct Layout {
        c_type: &'static str,
        size: usize,
        align: usize,
        /// (C field name, offset, size)
        fields: Vec<(&'static str, usize, usize)>,
    }

    fn field_size<T, F>(_field: fn(&T) -> &F) -> usize {
        size_of::<F>()
    }

    /// The layout of `$rust`, whose fields carry the C names; the list must name every field
    /// (the destructuring below stops compiling otherwise).
    macro_rules! layout {
        ($rust:ident as $c_type:literal { $($field:ident),+ $(,)? }) => {{
            #[allow(dead_code)]
            fn every_field_is_listed(value: &$rust) {
                let $rust { $($field: _),+ } = value;
            }
            Layout {
                c_type: $c_type,
                size: size_of::<$rust>(),
                align: align_of::<$rust>(),
                fields: vec![$((
                    stringify!($field),
                    offset_of!($rust, $field),
                    field_size(|value: &$rust| &value.$field),
                )),+],
            }
        }};
    }

    /// Every `#[repr(C)]` struct in this module that mirrors a librbd/librados type.
    fn rust_layouts() -> Vec<Layout> {
        vec![
            layout!(RbdImageInfo as "rbd_image_info_t" {
                size, obj_size, num_objs, order, block_name_prefix, parent_pool, parent_name,
            }),
            layout!(RbdSnapInfo as "rbd_snap_info_t" { id, size, name }),
            layout!(RbdLinkedImageSpec as "rbd_linked_image_spec_t" {
                pool_id, pool_name, pool_namespace, image_id, image_name, trash,
            }),
            layout!(RbdSnapSpec as "rbd_snap_spec_t" { id, namespace_type, name }),
            layout!(RbdTrashImageInfo as "rbd_trash_image_info_t" {
                id, name, source, deletion_time, deferment_end_time,
            }),
        ]
    }

    /// Every C constant this module restates, with the value Rust uses.
    fn rust_constants() -> Vec<(&'static str, i64)> {
        vec![(
            "RBD_SNAP_NAMESPACE_TYPE_TRASH",
            i64::from(RBD_SNAP_NAMESPACE_TYPE_TRASH),
        )]
    }

    fn constant_line(name: &str, value: i64) -> String {
        format!("{name}={value}")
    }

    /// One line per fact, the same whether Rust or C states it.
    fn struct_line(c_type: &str, size: usize, align: usize) -> String {
        format!("{c_type} size={size} align={align}")
    }

    fn field_line(c_type: &str, field: &str, offset: usize, size: usize) -> String {
        format!("{c_type}.{field} offset={offset} size={size}")
    }

    /// The facts Rust states, as the C program would print them.
    fn expected_lines(layouts: &[Layout]) -> Vec<String> {
        let mut lines = Vec::new();
        for l in layouts {
            lines.push(struct_line(l.c_type, l.size, l.align));
            for &(field, offset, size) in &l.fields {
                lines.push(field_line(l.c_type, field, offset, size));
            }
        }
        for (name, value) in rust_constants() {
            lines.push(constant_line(name, value));
        }
        lines
    }

    /// A C program printing, for the same structs and fields, what the C compiler lays out.
    fn c_program(layouts: &[Layout]) -> String {
        let mut c = String::from(
            "#include <stddef.h>\n#include <stdio.h>\n#include <rados/librados.h>\n\
             #include <rbd/librbd.h>\n\nint main(void) {\n",
        );
        for l in layouts {
            let t = l.c_type;
            let _ = writeln!(
                c,
                "  printf(\"{t} size=%zu align=%zu\\n\", sizeof({t}), _Alignof({t}));"
            );
            for &(f, _, _) in &l.fields {
                let _ = writeln!(
                    c,
                    "  printf(\"{t}.{f} offset=%zu size=%zu\\n\", offsetof({t}, {f}), \
                     sizeof((({t} *)0)->{f}));"
                );
            }
        }
        for (name, _) in rust_constants() {
            let _ = writeln!(c, "  printf(\"{name}=%lld\\n\", (long long){name});");
        }
        c.push_str("  return 0;\n}\n");
        c
    }

    /// Each expected fact the C output does not confirm, with what C said instead.
    fn mismatches(expected: &[String], c_output: &str) -> Vec<String> {
        let actual: Vec<&str> = c_output.lines().map(str::trim).collect();
        expected
            .iter()
            .filter(|line| !actual.contains(&line.as_str()))
            .map(|line| {
                let key = line.split([' ', '=']).next().unwrap_or(line);
                let c_says = actual
                    .iter()
                    .find(|a| a.split([' ', '=']).next() == Some(key))
                    .copied()
                    .unwrap_or("nothing");
                format!("Rust: {line}\n   C: {c_says}")
            })
            .collect()
    }

    /// A fresh directory for the C program, removed on drop.
    struct ScratchDir(PathBuf);

    impl ScratchDir {
        fn new() -> ScratchDir {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let dir = std::env::temp_dir()
                .join(format!("snapq-ffi-layout-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
            ScratchDir(dir)
        }
    }

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Compiles and runs `program` with the system C compiler (`$CC`, else `cc`); panics with
    /// the reason if there is none or it fails.
    fn run_c(program: &str) -> String {
        let dir = ScratchDir::new();
        let (source, binary) = (dir.0.join("layout.c"), dir.0.join("layout"));
        std::fs::write(&source, program).unwrap_or_else(|e| panic!("write the C program: {e}"));
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
        let compiled = Command::new(&cc)
            .args(["-std=c11", "-Wall", "-o"])
            .arg(&binary)
            .arg(&source)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run the C compiler `{cc}` ({e}): this test checks the librbd struct \
                     layouts against /usr/include/rbd/librbd.h and needs one; install gcc \
                     (apt-get install gcc) or point CC at a C compiler"
                )
            });
        assert!(
            compiled.status.success(),
            "`{cc}` could not compile the layout program (are librbd-dev and librados-dev \
             installed?):\n{}\n--- program ---\n{program}",
            String::from_utf8_lossy(&compiled.stderr)
        );
        let ran = Command::new(&binary)
            .output()
            .unwrap_or_else(|e| panic!("run the layout program: {e}"));
        assert!(ran.status.success(), "the layout program failed: {ran:?}");
        String::from_utf8_lossy(&ran.stdout).into_owned()
    }

    #[test]
    fn ffi_structs_match_the_librbd_headers() {
        let layouts = rust_layouts();
        let c_output = run_c(&c_program(&layouts));
        let wrong = mismatches(&expected_lines(&layouts), &c_output);
        assert!(
            wrong.is_empty(),
            "these Rust mirrors of librbd/librados structs differ from the C headers:\n{}",
            wrong.join("\n")
        );
    }

    #[test]
    fn layout_check_notices_a_moved_field_and_a_wrong_size() {
        let layouts = rust_layouts();
        let expected = expected_lines(&layouts);
        let agreeing = expected.join("\n");
        assert!(mismatches(&expected, &agreeing).is_empty());

        // As if C put `rbd_snap_info_t.size` first and made the struct larger.
        let moved = agreeing
            .replace(
                "rbd_snap_info_t.size offset=8 size=8",
                "rbd_snap_info_t.size offset=0 size=8",
            )
            .replace(
                "rbd_snap_info_t size=24 align=8",
                "rbd_snap_info_t size=32 align=8",
            );
        assert_ne!(moved, agreeing, "the test edits lines that exist");
        let wrong = mismatches(&expected, &moved);
        assert_eq!(wrong.len(), 2, "{wrong:?}");
        assert!(wrong[0].contains("C: rbd_snap_info_t size=32"), "{wrong:?}");
        assert!(
            wrong[1].contains("C: rbd_snap_info_t.size offset=0"),
            "{wrong:?}"
        );
    }
}
