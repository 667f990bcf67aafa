//! Before a job makes anything: is the Glance image waiting for *this* snapshot?
//!
//! The image must belong to the request's project (when the request says which), expect raw
//! data, and be `queued` with no location, or hold only what snapq itself made for this very
//! job (a resumed job, or a duplicate of a finished one, which then converges on the same
//! image). Anything else is refused before Ceph is touched, so an existing image and its data
//! stay exactly as they were.

use snapq_common::glance::ImageRecord;
use snapq_common::rbd::{run_blocking, Pool};

use crate::context::JobContext;
use crate::error::{JobError, Refusal};
use crate::lease::{self, Claim, JobLease};
use crate::provenance::{inspect_clone, CloneOwner};

/// How the job may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Nothing of this job exists yet, or only a partial start of it: make the image.
    Fresh,
    /// The image is this job's, already registered with Glance (`active` or importing): the
    /// steps will find their outcomes and converge.
    AlreadyRegistered,
}

/// Admits the job to the fast path, or refuses it saying why.
pub async fn admit(ctx: &JobContext) -> Result<Admission, JobError> {
    let record = ctx.glance_image().await?;
    check_owner_and_format(ctx, &record)?;
    let owner = clone_owner(ctx).await?;
    let admission = match record.status.as_str() {
        "queued" => Admission::Fresh,
        "active" | "importing" if owner.is_this_job() => Admission::AlreadyRegistered,
        // Made by snapq for another disk: say so, it is the more useful answer.
        "active" | "importing" if matches!(owner, CloneOwner::OtherJob { .. }) => {
            return Err(owner
                .require_this_job(&ctx.names)
                .err()
                .map_or_else(|| not_waiting(ctx, record.status), JobError::from))
        }
        _ => return Err(not_waiting(ctx, record.status)),
    };
    owner.require_this_job(&ctx.names)?;
    let ours = ctx.names.location(&ctx.fsid);
    let foreign_location = record
        .known_locations()
        .into_iter()
        .find(|url| *url != ours)
        .map(str::to_string);
    if let Some(location) = foreign_location {
        return Err(Refusal::foreign_location(ctx.image_id, &location).into());
    }
    Ok(admission)
}

/// Refuses a job whose request acts for a project that does not own the Glance image. Checked
/// before the job's lease is taken, so such a request leaves no trace in Ceph at all.
pub async fn check_project(ctx: &JobContext) -> Result<(), JobError> {
    if ctx.project.is_none() {
        return Ok(());
    }
    let record = ctx.glance_image().await?;
    Ok(check_owner(ctx, &record)?)
}

/// Refuses at once a request for an image that another disk's job is making, by the claim on
/// the image's lease object in `lease_pool` (read without the lock: the caller of a `call` is
/// answered now, not once the other job lets go of the lock). [`confirm_claim`] decides.
pub async fn check_claim(ctx: &JobContext, lease_pool: &Pool) -> Result<(), JobError> {
    match lease::claimed_by(lease_pool, ctx.image_id).await? {
        Some(disk) if disk != ctx.names.source.to_string() => Err(claimed(ctx, disk)),
        _ => Ok(()),
    }
}

/// Claims the image for this job's disk under its lease, or refuses the job when another
/// disk's job has it. A refused job must touch nothing and let the lease go with
/// `Release::Continue`.
pub async fn confirm_claim(ctx: &JobContext, lease: &JobLease) -> Result<(), JobError> {
    match lease.claim().await? {
        Claim::Ours => Ok(()),
        Claim::Other(disk) => Err(claimed(ctx, disk)),
    }
}

fn claimed(ctx: &JobContext, claimed_by: String) -> JobError {
    Refusal::ClaimedByOther {
        image_id: ctx.image_id,
        claimed_by,
        wanted: ctx.names.source.to_string(),
    }
    .into()
}

fn not_waiting(ctx: &JobContext, status: String) -> JobError {
    Refusal::ImageNotWaiting {
        image_id: ctx.image_id,
        status,
    }
    .into()
}

/// What the full copy may do with the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyAdmission {
    /// Queued and waiting: copy the disk into it.
    Copy,
    /// Already active with data snapq made for this job (the direct path finished after all,
    /// or an earlier full copy did): nothing to do.
    AlreadyMade,
}

/// Admits a job to the full copy. `fallback_snapshot_exists`: this job's full-copy snapshot is
/// still on the disk, so an active image is the work of an earlier attempt of this very copy
/// that stopped before removing it.
pub async fn admit_full_copy(
    ctx: &JobContext,
    fallback_snapshot_exists: bool,
) -> Result<CopyAdmission, JobError> {
    let record = ctx.glance_image().await?;
    check_owner_and_format(ctx, &record)?;
    match record.status.as_str() {
        "queued" => {
            let ours = ctx.names.location(&ctx.fsid);
            match record
                .known_locations()
                .into_iter()
                .find(|url| *url != ours)
            {
                Some(location) => Err(Refusal::foreign_location(ctx.image_id, location).into()),
                None => Ok(CopyAdmission::Copy),
            }
        }
        "active" => {
            let ours = ctx.names.location(&ctx.fsid);
            let direct = clone_owner(ctx).await?.is_this_job()
                && record.known_locations().iter().all(|url| *url == ours);
            if direct || fallback_snapshot_exists {
                Ok(CopyAdmission::AlreadyMade)
            } else {
                Err(Refusal::UnprovenData {
                    image_id: ctx.image_id,
                    disk: ctx.names.source.to_string(),
                }
                .into())
            }
        }
        _ => Err(Refusal::ImageNotWaiting {
            image_id: ctx.image_id,
            status: record.status,
        }
        .into()),
    }
}

fn check_owner_and_format(ctx: &JobContext, record: &ImageRecord) -> Result<(), Refusal> {
    check_owner(ctx, record)?;
    match record.disk_format.as_deref() {
        Some("raw") => Ok(()),
        other => Err(Refusal::NotRaw {
            image_id: ctx.image_id,
            disk_format: other.map_or("unset".to_string(), |f| format!("'{f}'")),
        }),
    }
}

fn check_owner(ctx: &JobContext, record: &ImageRecord) -> Result<(), Refusal> {
    if let Some(project) = ctx.project.as_deref() {
        let owner = record.owner.as_deref().unwrap_or("");
        if owner != project {
            return Err(Refusal::OtherProject {
                image_id: ctx.image_id,
                project: project.to_string(),
            });
        }
    }
    Ok(())
}

async fn clone_owner(ctx: &JobContext) -> Result<CloneOwner, JobError> {
    let (pool, names, image_id) = (ctx.image_pool.clone(), ctx.names.clone(), ctx.image_id);
    Ok(run_blocking(move || inspect_clone(&pool, &names, image_id)).await?)
}
