//! An open RBD image and the operations snapq performs on it.

use std::sync::Arc;

use super::error::RbdError;
use super::ffi::{self, IoCtx, RawImage};

/// Where a clone comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentSpec {
    pub pool: String,
    pub image: String,
    pub snap: String,
    /// The parent image was deleted and waits in the trash for its last clone to go.
    pub image_in_trash: bool,
}

/// A clone of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSpec {
    pub pool: String,
    pub image: String,
    pub in_trash: bool,
}

/// A snapshot of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub id: u64,
    pub name: String,
    pub size: u64,
}

/// An open image. All calls block; run them off the async runtime. It keeps its pool and
/// connection alive: dropping every [`super::Pool`] and [`super::Cluster`] it came from leaves it
/// usable, and the connection closes only after the image does.
pub struct Image {
    raw: RawImage,
    /// `pool/name[@snap]`, for error messages.
    spec: String,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image").field("spec", &self.spec).finish()
    }
}

impl Image {
    /// Opens `name` (at `snap`) through `io`, the I/O context of the pool `pool_name`.
    pub(crate) fn open(
        io: &Arc<IoCtx>,
        pool_name: &str,
        name: &str,
        snap: Option<&str>,
        read_only: bool,
    ) -> Result<Image, RbdError> {
        let spec = match snap {
            Some(snap) => format!("{pool_name}/{name}@{snap}"),
            None => format!("{pool_name}/{name}"),
        };
        let raw = RawImage::open(io, name, snap, read_only)
            .map_err(|e| RbdError::new("open", spec.clone(), e))?;
        Ok(Image { raw, spec })
    }

    pub fn spec(&self) -> &str {
        &self.spec
    }

    fn snap_target(&self, snap: &str) -> String {
        format!("{}@{}", self.spec, snap)
    }

    pub fn size(&self) -> Result<u64, RbdError> {
        Ok(self
            .raw
            .stat()
            .map_err(|e| RbdError::new("stat", self.spec.clone(), e))?
            .size)
    }

    pub fn object_size(&self) -> Result<u64, RbdError> {
        Ok(self
            .raw
            .stat()
            .map_err(|e| RbdError::new("stat", self.spec.clone(), e))?
            .object_size)
    }

    pub fn features(&self) -> Result<u64, RbdError> {
        self.raw
            .features()
            .map_err(|e| RbdError::new("get features of", self.spec.clone(), e))
    }

    pub fn snapshots(&self) -> Result<Vec<SnapshotInfo>, RbdError> {
        let snaps = self
            .raw
            .snap_list()
            .map_err(|e| RbdError::new("list snapshots of", self.spec.clone(), e))?;
        Ok(snaps
            .into_iter()
            .map(|s| SnapshotInfo {
                id: s.id,
                name: s.name,
                size: s.size,
            })
            .collect())
    }

    pub fn snap_exists(&self, snap: &str) -> Result<bool, RbdError> {
        self.raw
            .snap_exists(snap)
            .map_err(|e| RbdError::new("look up", self.snap_target(snap), e))
    }

    pub fn create_snap(&mut self, snap: &str) -> Result<(), RbdError> {
        let target = self.snap_target(snap);
        self.raw
            .snap_create(snap)
            .map_err(|e| RbdError::new("create snapshot", target, e))
    }

    pub fn remove_snap(&mut self, snap: &str) -> Result<(), RbdError> {
        let target = self.snap_target(snap);
        self.raw
            .snap_remove(snap)
            .map_err(|e| RbdError::new("remove snapshot", target, e))
    }

    /// Ids of the snapshots librbd moved to its trash namespace that were named `snap`: what
    /// a removal interrupted (a crash between librbd's two steps) or held up by clones leaves.
    /// `rbd snap ls` does not show them, and the image cannot be removed while they exist.
    pub fn trashed_snaps_named(&self, snap: &str) -> Result<Vec<u64>, RbdError> {
        let snaps = self
            .raw
            .snap_list()
            .map_err(|e| RbdError::new("list snapshots of", self.spec.clone(), e))?;
        let mut ids = Vec::new();
        for s in snaps {
            let name = self
                .raw
                .snap_trashed_name(s.id)
                .map_err(|e| RbdError::new("look up", format!("{}@{}", self.spec, s.name), e))?;
            if name.as_deref() == Some(snap) {
                ids.push(s.id);
            }
        }
        Ok(ids)
    }

    /// Removes the snapshot with id `snap_id` (in whatever namespace it is); `snap` names it in
    /// errors.
    pub fn remove_snap_by_id(&mut self, snap_id: u64, snap: &str) -> Result<(), RbdError> {
        let target = format!("{} (id {snap_id}, trashed)", self.snap_target(snap));
        self.raw
            .snap_remove_by_id(snap_id)
            .map_err(|e| RbdError::new("remove snapshot", target, e))
    }

    pub fn protect_snap(&mut self, snap: &str) -> Result<(), RbdError> {
        let target = self.snap_target(snap);
        self.raw
            .snap_protect(snap)
            .map_err(|e| RbdError::new("protect snapshot", target, e))
    }

    pub fn unprotect_snap(&mut self, snap: &str) -> Result<(), RbdError> {
        let target = self.snap_target(snap);
        self.raw
            .snap_unprotect(snap)
            .map_err(|e| RbdError::new("unprotect snapshot", target, e))
    }

    pub fn is_snap_protected(&self, snap: &str) -> Result<bool, RbdError> {
        self.raw
            .snap_is_protected(snap)
            .map_err(|e| RbdError::new("check protection of", self.snap_target(snap), e))
    }

    /// The value of image metadata `key` (`rbd image-meta get`), None if unset.
    pub fn metadata(&self, key: &str) -> Result<Option<String>, RbdError> {
        self.raw
            .metadata_get(key)
            .map_err(|e| RbdError::new("metadata get", self.spec.clone(), e))
    }

    /// Sets image metadata `key` (`rbd image-meta set`).
    pub fn set_metadata(&mut self, key: &str, value: &str) -> Result<(), RbdError> {
        self.raw
            .metadata_set(key, value)
            .map_err(|e| RbdError::new("metadata set", self.spec.clone(), e))
    }

    /// Copies all data from the parent into this clone, making it independent.
    /// `progress(done, total)` is called as librbd advances and answers whether to go on
    /// (`false` is passed to librbd as -ECANCELED; librbd 16 was seen to finish the flatten
    /// anyway). `Send`, because librbd calls it from its own threads.
    pub fn flatten(
        &mut self,
        progress: &mut (dyn FnMut(u64, u64) -> bool + Send),
    ) -> Result<(), RbdError> {
        let target = self.spec.clone();
        self.raw
            .flatten(progress)
            .map_err(|e| RbdError::new("flatten", target, e))
    }

    /// The clone's parent, or None for an independent image.
    pub fn parent(&self) -> Result<Option<ParentSpec>, RbdError> {
        let parent = self
            .raw
            .parent()
            .map_err(|e| RbdError::new("get parent of", self.spec.clone(), e))?;
        Ok(parent.map(|p| ParentSpec {
            pool: p.pool,
            image: p.image,
            snap: p.snap,
            image_in_trash: p.image_in_trash,
        }))
    }

    /// Clones of the snapshot this image was opened at.
    pub fn children(&self) -> Result<Vec<ChildSpec>, RbdError> {
        let children = self
            .raw
            .children()
            .map_err(|e| RbdError::new("list children of", self.spec.clone(), e))?;
        Ok(children
            .into_iter()
            .map(|c| ChildSpec {
                pool: c.pool,
                image: c.image,
                in_trash: c.in_trash,
            })
            .collect())
    }

    /// Reads exactly `buf.len()` bytes at `offset` (short only at the end of the image).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, RbdError> {
        let mut done = 0;
        while done < buf.len() {
            let n = self
                .raw
                .read(offset + done as u64, &mut buf[done..])
                .map_err(|e| RbdError::new("read", self.spec.clone(), e))?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }

    pub fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), RbdError> {
        let mut done = 0;
        while done < buf.len() {
            let n = self
                .raw
                .write(offset + done as u64, &buf[done..])
                .map_err(|e| RbdError::new("write", self.spec.clone(), e))?;
            if n == 0 {
                return Err(RbdError::new("write", self.spec.clone(), libc::EIO));
            }
            done += n;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), RbdError> {
        let target = self.spec.clone();
        self.raw
            .flush()
            .map_err(|e| RbdError::new("flush", target, e))
    }

    /// Calls `extent(offset, len)` for every allocated extent of the image (not counting
    /// data only its parent holds). `Send`, because librbd calls it from its own threads.
    pub fn for_each_allocated_extent(
        &self,
        whole_object: bool,
        extent: &mut (dyn FnMut(u64, usize) + Send),
    ) -> Result<(), RbdError> {
        let size = self.size()?;
        self.raw
            .diff_iterate(
                None,
                0,
                size,
                false,
                whole_object,
                &mut |offset, len, exists| {
                    if exists {
                        extent(offset, len)
                    }
                },
            )
            .map_err(|e| RbdError::new("list extents of", self.spec.clone(), e))
    }

    /// Bytes the image itself stores, counted per RADOS object like `rbd du` does.
    pub fn used_bytes(&self) -> Result<u64, RbdError> {
        let mut used = 0u64;
        self.for_each_allocated_extent(true, &mut |_, len| used += len as u64)?;
        Ok(used)
    }
}

/// librbd's version as `major.minor.extra`.
pub fn librbd_version() -> String {
    let (major, minor, extra) = ffi::version();
    format!("{major}.{minor}.{extra}")
}
