//! Everything a job's steps need: the request, the artefact names, and handles to Ceph and
//! Glance.

use std::time::Duration;

use snapq_common::glance::{GlanceClient, GlanceError, ImageRecord};
use snapq_common::message::SnapshotRequest;
use snapq_common::rbd::{run_blocking, Cluster, Pool};
use uuid::Uuid;

use crate::error::JobError;
use crate::lease::LeaseToken;
use crate::names::ArtifactNames;
use crate::settings::{LostImport, WorkerSettings};

/// Per-job state shared by the steps. Cheap handles only: pools and the Glance client are
/// reference-counted.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub image_id: Uuid,
    pub names: ArtifactNames,
    pub fsid: String,
    /// The fsid of the cluster Glance's rbd store uses, when configured.
    pub glance_store_fsid: Option<String>,
    pub cluster: Cluster,
    /// The pool holding the instance disk.
    pub source_pool: Pool,
    /// Glance's pool, where the image is made.
    pub image_pool: Pool,
    pub glance: GlanceClient,
    /// How long Glance may take to turn a registered location into an `active` image.
    pub active_timeout: Duration,
    /// What to do when Glance lost the job's location import.
    pub lost_import: LostImport,
    /// How long one delivery may wait for a flatten before checkpointing its progress.
    pub flatten_hold: Duration,
    /// Clones whose source holds less than this many bytes are flattened in the worker.
    pub flatten_in_process_below: u64,
    /// Whether the job's lease is still held: checked before every mutating Ceph call.
    /// Until the lease is taken ([`JobContext::under`]) every check fails.
    pub lease: LeaseToken,
    /// The project the request acts for (`_context_project_id`), if it says: the Glance image
    /// must be owned by it.
    pub project: Option<String>,
}

impl JobContext {
    /// The context for `request` on a worker with `settings`.
    pub fn new(
        settings: &WorkerSettings,
        request: &SnapshotRequest,
    ) -> Result<JobContext, JobError> {
        let cluster = &settings.cluster;
        Ok(JobContext {
            image_id: request.image_id,
            names: ArtifactNames::for_request(request, settings.image_pool.name()),
            fsid: cluster.fsid().to_string(),
            glance_store_fsid: settings.glance_store_fsid.clone(),
            cluster: cluster.clone(),
            source_pool: cluster.pool(&request.disk.pool)?,
            image_pool: settings.image_pool.clone(),
            glance: settings.glance.clone(),
            active_timeout: settings.active_timeout,
            lost_import: settings.lost_import,
            flatten_hold: settings.flatten_hold,
            flatten_in_process_below: settings.flatten_in_process_below,
            project: request.context.project().map(str::to_string),
            lease: LeaseToken::not_held(request.image_id),
        })
    }

    /// This context for work under the lease `token` stands for.
    pub fn under(mut self, token: LeaseToken) -> JobContext {
        self.lease = token;
        self
    }
    /// Ok if `images/<image_id>` is this job's own clone; the refusal saying what it is
    /// otherwise. A missing clone is left for the caller's own open to report.
    pub async fn require_own_clone(&self) -> Result<(), JobError> {
        let (pool, names, image_id) = (self.image_pool.clone(), self.names.clone(), self.image_id);
        let owner =
            run_blocking(move || crate::provenance::inspect_clone(&pool, &names, image_id)).await?;
        Ok(owner.require_this_job(&self.names)?)
    }

    /// The job's Glance image as it is now; an image deleted meanwhile is `ImageGone`.
    pub async fn glance_image(&self) -> Result<ImageRecord, JobError> {
        match self.glance.get_image(self.image_id).await {
            Ok(record) => Ok(record),
            Err(GlanceError::NotFound { .. }) => Err(JobError::ImageGone {
                image_id: self.image_id,
            }),
            Err(e) => Err(e.into()),
        }
    }
}
