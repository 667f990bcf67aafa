//! A job's lease: an exclusive RADOS lock per job, with expiry and renewal, so two workers
//! never run a step of the same job at once. A worker that dies stops renewing and the lease
//! expires; a worker that fails to renew has lost it and must stop working on the job.

use std::time::Duration;

use snapq_common::rbd::{run_blocking, Cluster, Pool, RbdError, RbdErrorKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, warn};
use uuid::Uuid;

const LOCK_NAME: &str = "snapq-job";
const HELD_RETRIES: u32 = 5;
const HELD_RETRY_DELAY: Duration = Duration::from_millis(10);

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
    /// Takes the lease for `duration`, renewing it every third of that until released.
    pub async fn acquire(
        cluster: &Cluster,
        pool_name: &str,
        image_id: Uuid,
        holder: &str,
        duration: Duration,
    ) -> Result<JobLease, LeaseError> {
        let pool = &cluster.pool(pool_name).map_err(LeaseError::Ceph)?;
        let object = lease_object(image_id);
        let cookie = format!("{holder}/{}", Uuid::new_v4().simple());
        // The previous step's worker releases the lease while it publishes the checkpoint,
        // so the lease may still be held for a few milliseconds: try a few times first.
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
        let (pool, object, cookie) = (self.pool.clone(), self.object.clone(), self.cookie.clone());
        let result = run_blocking(move || {
            pool.unlock(&object, LOCK_NAME, &cookie)?;
            if remove {
                pool.remove_object(&object)?;
            }
            Ok(())
        })
        .await;
        if let Err(e) = result {
            warn!(error = %e, "could not release the lease; it expires by itself");
        }
    }
}
