//! The full-copy fallback, for when the fast path cannot work (no write access to Glance's
//! pool, Glance refusing the location, a non-raw image, retries exhausted): a fresh snapshot
//! of the instance disk is streamed straight from librbd into Glance's `PUT /file`, never
//! touching local disk, reading only allocated data and synthesising the zero runs.

mod extents;
mod stream;

use std::time::{Duration, Instant};

use snapq_common::rbd::run_blocking;
use tracing::info;

use crate::artefacts::remove_disk_snapshot;
use crate::context::JobContext;
use crate::error::JobError;
use crate::gate::{self, CopyAdmission};

/// Prefix of the consistency snapshot the fallback reads from.
pub const FALLBACK_SNAPSHOT_PREFIX: &str = "snapq-fallback-";

/// What a full copy did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CopyReport {
    pub size: u64,
    /// Bytes read from Ceph (allocated data); the rest was synthesised zeros.
    pub read: u64,
    pub seconds: f64,
}

/// Whether the image may be made (or was made) by this job's full copy; a refusal says why.
/// Read-only: ask it before cleaning up for a copy.
pub async fn admit(ctx: &JobContext) -> Result<CopyAdmission, JobError> {
    let snapshot = format!("{FALLBACK_SNAPSHOT_PREFIX}{}", ctx.image_id);
    gate::admit_full_copy(ctx, fallback_snapshot_exists(ctx, &snapshot).await?).await
}

/// Copies the disk into the (queued) Glance image and waits until it is active. Idempotent:
/// an image that is already active is left alone; the fallback snapshot is removed either way.
pub async fn full_copy(ctx: &JobContext) -> Result<Option<CopyReport>, JobError> {
    let snapshot = format!("{FALLBACK_SNAPSHOT_PREFIX}{}", ctx.image_id);
    if admit(ctx).await? == CopyAdmission::AlreadyMade {
        remove_fallback_snapshot(ctx).await?;
        return Ok(None);
    }
    let (pool, disk, snap, lease) = (
        ctx.source_pool.clone(),
        ctx.names.source.image.clone(),
        snapshot.clone(),
        ctx.lease.clone(),
    );
    let extents = run_blocking(move || {
        let mut image = match pool.open(&disk) {
            Ok(image) => image,
            Err(e) => return Ok(Err(e)),
        };
        if !image.snap_exists(&snap)? {
            lease.check("snapshot")?;
            image.create_snap(&snap)?;
        }
        let at_snapshot = pool.open_read_only(&disk, Some(&snap))?;
        Ok(Ok(extents::allocated(&at_snapshot)?))
    })
    .await?;
    let extents = match extents {
        Ok(extents) => extents,
        Err(e) if e.is_not_found() => {
            return Err(JobError::SourceMissing {
                disk: ctx.names.source.to_string(),
            })
        }
        Err(e) => return Err(e.into()),
    };
    let started = Instant::now();
    let read = extents.allocated_bytes();
    let size = extents.size;
    info!(
        size,
        allocated = read,
        "full copy: streaming the disk into Glance"
    );
    let body = stream::body(
        ctx.source_pool.clone(),
        ctx.names.source.image.clone(),
        snapshot,
        extents,
    );
    ctx.lease.check("upload a full copy into")?;
    ctx.glance.upload(ctx.image_id, body, Some(size)).await?;
    ctx.glance
        .wait_active(ctx.image_id, ctx.active_timeout, Duration::from_millis(200))
        .await?;
    remove_fallback_snapshot(ctx).await?;
    let report = CopyReport {
        size,
        read,
        seconds: started.elapsed().as_secs_f64(),
    };
    info!(seconds = report.seconds, "full copy done: image is active");
    Ok(Some(report))
}

/// Whether this job's full-copy snapshot is on the disk (a missing disk has none).
async fn fallback_snapshot_exists(ctx: &JobContext, snapshot: &str) -> Result<bool, JobError> {
    let (pool, disk, snap) = (
        ctx.source_pool.clone(),
        ctx.names.source.image.clone(),
        snapshot.to_string(),
    );
    Ok(
        run_blocking(move || match pool.open_read_only(&disk, None) {
            Ok(image) => image.snap_exists(&snap),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        })
        .await?,
    )
}

/// Removes the fallback's consistency snapshot if it is there.
pub async fn remove_fallback_snapshot(ctx: &JobContext) -> Result<(), JobError> {
    let snapshot = format!("{FALLBACK_SNAPSHOT_PREFIX}{}", ctx.image_id);
    let (pool, disk, lease) = (
        ctx.source_pool.clone(),
        ctx.names.source.image.clone(),
        ctx.lease.clone(),
    );
    run_blocking(move || remove_disk_snapshot(&pool, &disk, &snapshot, &lease)).await?;
    Ok(())
}
