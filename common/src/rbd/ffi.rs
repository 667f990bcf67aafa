//! The only `unsafe` code in snapq: hand-written bindings to the few librbd functions snapq
//! needs (librbd has no maintained Rust wrapper), and the thin safe functions around them.
//!
//! Everything here returns raw errno values; `error.rs` turns them into typed errors. Calls are
//! blocking: callers keep them off the async runtime (see `run_blocking`).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use ceph::ceph::{IoCtx, Rados};

type RbdImageT = *mut c_void;
type RadosIoctxT = ceph::rados::rados_ioctx_t;
type ProgressFn = extern "C" fn(offset: u64, total: u64, ptr: *mut c_void) -> c_int;
type DiffFn = extern "C" fn(offset: u64, len: usize, exists: c_int, arg: *mut c_void) -> c_int;

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

#[repr(C)]
struct RbdSnapInfo {
    id: u64,
    size: u64,
    name: *const c_char,
}

#[repr(C)]
struct RbdLinkedImageSpec {
    pool_id: i64,
    pool_name: *mut c_char,
    pool_namespace: *mut c_char,
    image_id: *mut c_char,
    image_name: *mut c_char,
    trash: bool,
}

#[repr(C)]
struct RbdSnapSpec {
    id: u64,
    namespace_type: c_int,
    name: *mut c_char,
}

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
    fn rados_mgr_command(
        cluster: ceph::rados::rados_t,
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

/// A connected RADOS cluster handle that can move between threads.
pub struct RadosHandle(pub Rados);

// SAFETY: librados cluster handles are thread-safe (librados.h: "rados_t ... thread-safe");
// the `ceph` crate marks `Rados` Sync but not Send only because it holds a raw pointer.
unsafe impl Send for RadosHandle {}

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

/// Sends a JSON command to the active ceph-mgr; returns (output, status text).
pub fn mgr_command(
    cluster: &RadosHandle,
    command: &str,
) -> Result<(String, String), (Errno, String)> {
    let command = c_string(command).map_err(|e| (e, String::new()))?;
    let mut cmds = [command.as_ptr()];
    let (mut outbuf, mut outbuflen, mut outs, mut outslen) =
        (ptr::null_mut(), 0usize, ptr::null_mut(), 0usize);
    // SAFETY: connected cluster handle; one NUL-terminated command; empty input; out-pointers
    // valid; the returned buffers are freed by take_buffer.
    let rc = unsafe {
        rados_mgr_command(
            *cluster.0.inner(),
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
    check(unsafe { rbd_create(*io.inner(), name.as_ptr(), size, &mut order) })
}

pub fn remove(io: &IoCtx, name: &str) -> Result<(), Errno> {
    let name = c_string(name)?;
    // SAFETY: valid ioctx and NUL-terminated name.
    check(unsafe { rbd_remove(*io.inner(), name.as_ptr()) })
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
            *parent_io.inner(),
            parent.as_ptr(),
            parent_snap.as_ptr(),
            *child_io.inner(),
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
        let rc = unsafe { rbd_trash_list(*io.inner(), entries.as_mut_ptr(), &mut num) };
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

/// An open librbd image; closed on drop.
pub struct RawImage {
    handle: RbdImageT,
}

// SAFETY: a librbd image handle may be used from any thread, one call at a time; `RawImage`
// is not Sync, so `&mut`/ownership guarantees that.
unsafe impl Send for RawImage {}

impl Drop for RawImage {
    fn drop(&mut self) {
        // SAFETY: the handle came from a successful rbd_open and is closed exactly once.
        unsafe { rbd_close(self.handle) };
    }
}

impl RawImage {
    pub fn open(
        io: &IoCtx,
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
                rbd_open_read_only(*io.inner(), name.as_ptr(), &mut handle, opt_ptr(&snap))
            } else {
                rbd_open(*io.inner(), name.as_ptr(), &mut handle, opt_ptr(&snap))
            }
        };
        check(rc)?;
        Ok(RawImage { handle })
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
    pub fn flatten(&mut self, progress: &mut dyn FnMut(u64, u64)) -> Result<(), Errno> {
        extern "C" fn trampoline(offset: u64, total: u64, data: *mut c_void) -> c_int {
            // SAFETY: `data` is the `&mut &mut dyn FnMut` passed below, alive for the call.
            let progress = unsafe { &mut *(data as *mut &mut dyn FnMut(u64, u64)) };
            // A panic must not unwind into C.
            let _ = catch_unwind(AssertUnwindSafe(|| progress(offset, total)));
            0
        }
        let mut progress = progress;
        let data = &mut progress as *mut &mut dyn FnMut(u64, u64) as *mut c_void;
        // SAFETY: open handle; callback and data live until the call returns.
        check(unsafe { rbd_flatten_with_progress(self.handle, trampoline, data) })
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
        extent: &mut dyn FnMut(u64, usize, bool),
    ) -> Result<(), Errno> {
        extern "C" fn trampoline(
            offset: u64,
            len: usize,
            exists: c_int,
            data: *mut c_void,
        ) -> c_int {
            // SAFETY: `data` is the `&mut &mut dyn FnMut` passed below, alive for the call.
            let extent = unsafe { &mut *(data as *mut &mut dyn FnMut(u64, usize, bool)) };
            match catch_unwind(AssertUnwindSafe(|| extent(offset, len, exists != 0))) {
                Ok(()) => 0,
                Err(_) => -libc::ECANCELED,
            }
        }
        let from_snap = opt_c_string(from_snap)?;
        let mut extent = extent;
        let data = &mut extent as *mut &mut dyn FnMut(u64, usize, bool) as *mut c_void;
        // SAFETY: open handle; callback and data live until the call returns.
        check(unsafe {
            rbd_diff_iterate2(
                self.handle,
                opt_ptr(&from_snap),
                offset,
                len,
                include_parent as u8,
                whole_object as u8,
                trampoline,
                data,
            )
        })
    }
}
