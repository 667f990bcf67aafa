//! A job's lease: an exclusive RADOS lock per job, with expiry and renewal, so two workers
//! never run a step of the same job at once. A worker that dies stops renewing and the lease
//! expires; a worker that fails to renew has lost it and must stop working on the job.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use snapq_common::message::SnapshotRequest;
use snapq_common::rbd::{run_blocking, Cluster, Pool, RbdError, RbdErrorKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, warn};
use uuid::Uuid;

use crate::settings::WorkerSettings;

const LOCK_NAME: &str = "snapq-job";
/// Tries while another holder has the lease: the previous step's worker releases it while it
/// publishes the checkpoint, so it may still be held for a few milliseconds.
const HELD_RETRIES: u32 = 16;
const HELD_RETRY_DELAY: Duration = Duration::from_millis(3);
/// The longest a delivery waits for this process's own release of the same lease.
const OWN_RELEASE_WAIT: Duration = Duration::from_secs(1);

/// Releases in flight in this process, by lease object. The broker hands out a checkpoint
/// before the worker that published it has even seen the confirm, so the next step's delivery
/// often reaches the same worker while its release is still under way: it waits for that
/// release here instead of colliding with it in Ceph.
fn releases_in_flight() -> MutexGuard<'static, HashMap<String, watch::Receiver<bool>>> {
    static IN_FLIGHT: OnceLock<Mutex<HashMap<String, watch::Receiver<bool>>>> = OnceLock::new();
    IN_FLIGHT
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        // A poisoned lock only means a thread panicked holding it; each update is one call.
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The RADOS object that carries a job's lock. It lives in the instance disk's pool, where
/// Nova's Ceph user can always write (it may only read Glance's pool: that is a fallback
/// case, which needs the lease too).
pub fn lease_object(image_id: Uuid) -> String {
    format!("snapq_lease.{image_id}")
}

pub struct JobLease {
    pool: Pool,
    object: String,
    cookie: String,
    lost: watch::Receiver<bool>,
    renewer: JoinHandle<()>,
}

/// Why no lease was had.
#[derive(Debug)]
pub enum LeaseError {
    /// Another worker holds it.
    Held,
    Ceph(RbdError),
}

impl JobLease {
    /// Takes the lease of `request`'s job for this worker.
    pub async fn for_job(
        settings: &WorkerSettings,
        request: &SnapshotRequest,
    ) -> Result<JobLease, LeaseError> {
        JobLease::acquire(
            &settings.cluster,
            &request.disk.pool,
            request.image_id,
            &settings.name,
            settings.lease_duration,
        )
        .await
    }

    /// Takes the lease for `duration`, renewing it every third of that until released.
    async fn acquire(
        cluster: &Cluster,
        pool_name: &str,
        image_id: Uuid,
        holder: &str,
        duration: Duration,
    ) -> Result<JobLease, LeaseError> {
        let pool = &cluster.pool(pool_name).map_err(LeaseError::Ceph)?;
        let object = lease_object(image_id);
        let cookie = format!("{holder}/{}", Uuid::new_v4().simple());
        let own_release = releases_in_flight().get(&object).cloned();
        if let Some(mut released) = own_release {
            let _ = tokio::time::timeout(OWN_RELEASE_WAIT, released.wait_for(|done| *done)).await;
        }
        let mut tries = 0;
        loop {
            let (pool2, object2, cookie2) = (pool.clone(), object.clone(), cookie.clone());
            let taken = run_blocking(move || {
                pool2.lock_exclusive(&object2, LOCK_NAME, &cookie2, duration, false)
            })
            .await;
            match taken {
                Ok(()) => break,
                Err(e) if matches!(e.kind, RbdErrorKind::Busy | RbdErrorKind::AlreadyExists) => {
                    tries += 1;
                    if tries >= HELD_RETRIES {
                        return Err(LeaseError::Held);
                    }
                    tokio::time::sleep(HELD_RETRY_DELAY).await;
                }
                Err(e) => return Err(LeaseError::Ceph(e)),
            }
        }
        let (lost_tx, lost) = watch::channel(false);
        let (pool2, object2, cookie2) = (pool.clone(), object.clone(), cookie.clone());
        let renewer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(duration / 3).await;
                let (p, o, c) = (pool2.clone(), object2.clone(), cookie2.clone());
                match run_blocking(move || p.lock_exclusive(&o, LOCK_NAME, &c, duration, true))
                    .await
                {
                    Ok(()) => {}
                    Err(e) if e.is_transient() => {
                        warn!(error = %e, "lease renewal failed; retrying")
                    }
                    Err(e) => {
                        error!(error = %e, "lease lost; stopping work on this job");
                        let _ = lost_tx.send(true);
                        return;
                    }
                }
            }
        });
        Ok(JobLease {
            pool: pool.clone(),
            object,
            cookie,
            lost,
            renewer,
        })
    }

    /// Resolves when the lease is lost.
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        let _ = lost.wait_for(|lost| *lost).await;
        // A closed channel without loss means the renewer ended: treat as lost.
    }

    /// Stops renewing and unlocks; `remove` also deletes the lock object (job finished).
    pub async fn release(self, remove: bool) {
        self.renewer.abort();
        let (done_tx, done) = watch::channel(false);
        releases_in_flight().insert(self.object.clone(), done.clone());
        let (pool, object, cookie) = (self.pool.clone(), self.object.clone(), self.cookie.clone());
        let result = run_blocking(move || {
            pool.unlock(&object, LOCK_NAME, &cookie)?;
            if remove {
                pool.remove_object(&object)?;
            }
            Ok(())
        })
        .await;
        {
            let mut in_flight = releases_in_flight();
            // Only this release's own entry: a later release of the same lease may have
            // replaced it.
            if in_flight
                .get(&self.object)
                .is_some_and(|entry| entry.same_channel(&done))
            {
                in_flight.remove(&self.object);
            }
        }
        let _ = done_tx.send(true);
        if let Err(e) = result {
            warn!(error = %e, "could not release the lease; it expires by itself");
        }
    }
}
