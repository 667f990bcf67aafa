//! `snapq jobs purge`: a parked job goes for good, and with it what remains of it in Ceph —
//! its own marked artefacts (the source snapshot, the clone unless Glance uses it, the
//! full-copy snapshot) and its lease object. The same mark checks as cleanup apply: nothing
//! snapq did not make for this job is touched.

use std::time::Duration;

use snapq_common::glance::GlanceClient;
use snapq_common::message::SnapshotRequest;
use snapq_common::rbd::{Cluster, Pool};
use uuid::Uuid;

use crate::context::JobContext;
use crate::error::JobError;
use crate::lease::{JobLease, LeaseError, Release};
use crate::names::ArtifactNames;
use crate::policy::SourcePolicy;
use crate::{cleanup, fallback};

/// What a purge needs to reach.
pub struct PurgeTarget {
    pub cluster: Cluster,
    /// Glance's pool.
    pub image_pool: Pool,
    /// The workers' lease pool.
    pub lease_pool: Pool,
    pub glance: GlanceClient,
    /// The workers' source policy: a parked request naming a disk it forbids is purged from
    /// the parking lot but nothing in Ceph is touched for it.
    pub policy: SourcePolicy,
}

/// Why a job's remains were not removed.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error("a worker is working on the job right now (its lease is held); try again later")]
    InUse,
    #[error("another job ({job}) is making Glance image {image_id} right now; its artefacts are the same as this job's, so nothing is removed; try again once it has ended")]
    OtherJobLive { job: String, image_id: Uuid },
    /// The request names a disk the source policy forbids: nothing in Ceph was touched.
    #[error("{0}; nothing in Ceph is touched for it")]
    NotAllowed(#[from] crate::error::Refusal),
    #[error(transparent)]
    Job(#[from] JobError),
}

/// Removes what the job for `request` left in Ceph, under its lease, and the lease object.
/// Returns what remains because Glance uses it (or may: Glance could not be asked).
pub async fn remove_remains(
    target: &PurgeTarget,
    request: &SnapshotRequest,
    job_id: &str,
) -> Result<Vec<String>, PurgeError> {
    target.policy.check(&request.disk)?;
    let disk = request.disk.to_string();
    let lease = match JobLease::acquire(
        &target.lease_pool,
        request.image_id,
        (job_id, &disk),
        "snapq-jobs-purge",
        Duration::from_secs(30),
    )
    .await
    {
        Ok(lease) => lease,
        Err(LeaseError::Held) => return Err(PurgeError::InUse),
        Err(LeaseError::Ceph(e)) => return Err(JobError::Ceph(e).into()),
    };
    // A live job of the same image (a replay, a duplicate) between two steps: the lease is
    // free, but the job has a record on it. Its artefacts carry the same marks as this job's.
    match lease.recorded_job().await {
        Ok(Some(live)) if live != job_id => {
            lease.release(Release::Continue).await;
            return Err(PurgeError::OtherJobLive {
                job: live,
                image_id: request.image_id,
            });
        }
        Ok(_) => {}
        Err(e) => {
            lease.release(Release::Continue).await;
            return Err(JobError::Ceph(e).into());
        }
    }
    let result = async {
        let ctx = context(target, request)?.under(lease.token());
        crate::gate::confirm_claim(&ctx, &lease).await?;
        let remaining = cleanup::remove_partial_state(&ctx).await?;
        fallback::remove_fallback_snapshot(&ctx).await?;
        Ok::<_, JobError>(remaining)
    }
    .await;
    lease
        .release(if result.is_ok() {
            Release::End
        } else {
            Release::Continue
        })
        .await;
    Ok(result?)
}

fn context(target: &PurgeTarget, request: &SnapshotRequest) -> Result<JobContext, JobError> {
    let cluster = &target.cluster;
    Ok(JobContext {
        image_id: request.image_id,
        names: ArtifactNames::for_request(request, target.image_pool.name()),
        fsid: cluster.fsid().to_string(),
        glance_store_fsid: None,
        cluster: cluster.clone(),
        source_pool: cluster.pool(&request.disk.pool)?,
        image_pool: target.image_pool.clone(),
        glance: target.glance.clone(),
        active_timeout: Duration::from_secs(60),
        lost_import: crate::settings::LostImport::DEFAULT,
        flatten_hold: Duration::from_secs(60),
        flatten_in_process_below: 0,
        project: None,
        lease: crate::lease::LeaseToken::not_held(Uuid::nil()),
    })
}
