//! A job's lease: an exclusive RADOS lock per Glance image id, with expiry and renewal, so two
//! workers never work on the same image at once — whatever pool each request names, since the
//! lock object lives in one fixed pool (`--lease-pool`).
//!
//! - A worker that dies stops renewing; the lock expires after the lease time and the next
//!   delivery of the job takes it.
//! - A renewal that fails is retried quickly; once a renewal has not succeeded for two thirds
//!   of the lease, the lease counts as lost (before it can expire in RADOS and be taken by
//!   another worker). Librados calls are bounded by `--ceph-op-timeout`, at most half the lease,
//!   so no renewal hangs past that.
//! - Losing the lease flips its [`LeaseToken`]: steps check the token before every mutating
//!   Ceph call, so a step stops before its next change.
//! - The lock object records how far the job got (`snapq.progress`: job id and last step
//!   done), written under the lock when a step ends. A stale copy of a job message (one whose
//!   acknowledgement was lost after its checkpoint was published) finds it is behind and is
//!   dropped instead of running the job a second time at once.
//! - The lock object also records which source disk the image is being made from
//!   (`snapq.claim`), written by the first job admitted for the image. A request for the same
//!   image from another disk is refused on sight (before the lock), and a job that holds the
//!   lock but not the claim never removes the object: the claim and the progress record are
//!   the other job's.
//! - The object is removed when the job that holds the claim ends, however it ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use snapq_common::job::Step;
use snapq_common::rbd::{run_blocking, Pool, RbdError, RbdErrorKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, warn};
use uuid::Uuid;

use crate::settings::WorkerSettings;

const LOCK_NAME: &str = "snapq-job";
/// The lock object's record of the job's progress.
const PROGRESS_XATTR: &str = "snapq.progress";
/// The lock object's record of the source disk (`pool/image`) the image is made from.
const CLAIM_XATTR: &str = "snapq.claim";
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

/// The RADOS object that carries the lock of the job for Glance image `image_id`.
pub fn lease_object(image_id: Uuid) -> String {
    format!("snapq_lease.{image_id}")
}

/// The source disk (`pool/image`) a job for Glance image `image_id` has claimed the image for,
/// if any. Read without the lock, so a request for another disk is refused at once; a job
/// confirms its claim under the lock with [`JobLease::claim`].
pub async fn claimed_by(pool: &Pool, image_id: Uuid) -> Result<Option<String>, RbdError> {
    let (pool, object) = (pool.clone(), lease_object(image_id));
    let raw = run_blocking(move || pool.xattr(&object, CLAIM_XATTR)).await?;
    Ok(raw.map(|raw| String::from_utf8_lossy(&raw).into_owned()))
}

/// Whose the image is, by the lock object's claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This job's disk (claimed now, or already).
    Ours,
    /// Another source disk's job has it.
    Other(String),
}

/// Whether the lease is still held, shared with the blocking Ceph calls of a step.
#[derive(Debug, Clone)]
pub struct LeaseToken {
    held: Arc<AtomicBool>,
    object: Arc<str>,
}

impl LeaseToken {
    /// A token of no lease: every check fails. For work done before the lease is taken,
    /// which must not change anything.
    pub fn not_held(image_id: Uuid) -> LeaseToken {
        LeaseToken {
            held: Arc::new(AtomicBool::new(false)),
            object: lease_object(image_id).into(),
        }
    }

    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    /// Ok while the lease is held; a `Cancelled` error naming `op` once it is not. Call it
    /// before every mutating Ceph call.
    pub fn check(&self, op: &'static str) -> Result<(), RbdError> {
        if self.is_held() {
            Ok(())
        } else {
            Err(RbdError::with_kind(
                op,
                format!("the job holding lease {}", self.object),
                RbdErrorKind::Cancelled,
            ))
        }
    }
}

/// How far a job had got, as its lease object records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub job_id: String,
    pub step_done: Step,
}

impl Progress {
    fn encode(&self) -> Vec<u8> {
        format!("{} {}", self.job_id, self.step_done.name()).into_bytes()
    }

    fn decode(raw: &[u8]) -> Option<Progress> {
        let text = std::str::from_utf8(raw).ok()?;
        let (job_id, step) = text.split_once(' ')?;
        Some(Progress {
            job_id: job_id.to_string(),
            step_done: Step::from_name(step)?,
        })
    }
}

/// How a job's lease ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The job goes on (a checkpoint or a retry): unlock, keep the object.
    Continue,
    /// The job goes on after `Progress` was reached: record it, then unlock.
    After(Step),
    /// The job has ended (active, parked, refused, purged): remove the object with its lock.
    End,
}

pub struct JobLease {
    pool: Pool,
    object: String,
    cookie: String,
    job_id: String,
    /// The source disk this job makes the image from (`pool/image`).
    disk: String,
    token: LeaseToken,
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
    /// Takes the lease of the job `job_id` for Glance image `image_id` from source disk `disk`
    /// (`pool/image`), in the worker's lease pool.
    pub async fn for_job(
        settings: &WorkerSettings,
        image_id: Uuid,
        job_id: &str,
        disk: &str,
    ) -> Result<JobLease, LeaseError> {
        JobLease::acquire(
            &settings.lease_pool,
            image_id,
            (job_id, disk),
            &settings.name,
            settings.lease_duration,
        )
        .await
    }

    /// Takes the lease for `duration`, renewing it every third of that until released.
    /// `(job_id, disk)`: the job and the source disk (`pool/image`) it makes the image from.
    pub async fn acquire(
        pool: &Pool,
        image_id: Uuid,
        (job_id, disk): (&str, &str),
        holder: &str,
        duration: Duration,
    ) -> Result<JobLease, LeaseError> {
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
        let token = LeaseToken {
            held: Arc::new(AtomicBool::new(true)),
            object: object.clone().into(),
        };
        let (lost_tx, lost) = watch::channel(false);
        let renewer = tokio::spawn(renew(
            pool.clone(),
            object.clone(),
            cookie.clone(),
            duration,
            token.clone(),
            lost_tx,
        ));
        Ok(JobLease {
            pool: pool.clone(),
            object,
            cookie,
            job_id: job_id.to_string(),
            disk: disk.to_string(),
            token,
            lost,
            renewer,
        })
    }

    /// The token the job's steps check before each change.
    pub fn token(&self) -> LeaseToken {
        self.token.clone()
    }

    /// How far the lease object says this job got, if it recorded anything for it.
    pub async fn progress(&self) -> Result<Option<Step>, RbdError> {
        let (pool, object) = (self.pool.clone(), self.object.clone());
        let raw = run_blocking(move || pool.xattr(&object, PROGRESS_XATTR)).await?;
        Ok(raw
            .as_deref()
            .and_then(Progress::decode)
            .filter(|p| p.job_id == self.job_id)
            .map(|p| p.step_done))
    }

    /// The job id of the progress record on the lease object, whatever job wrote it.
    pub async fn recorded_job(&self) -> Result<Option<String>, RbdError> {
        let (pool, object) = (self.pool.clone(), self.object.clone());
        let raw = run_blocking(move || pool.xattr(&object, PROGRESS_XATTR)).await?;
        Ok(raw.as_deref().and_then(Progress::decode).map(|p| p.job_id))
    }

    /// Claims the image for this job's disk, under the lock: the first job admitted for an
    /// image claims it; a job for the same disk (a resume, a duplicate) finds its claim; a job
    /// for another disk gets [`Claim::Other`] and must touch nothing.
    pub async fn claim(&self) -> Result<Claim, RbdError> {
        self.token.check("claim the image in")?;
        let (pool, object, disk) = (self.pool.clone(), self.object.clone(), self.disk.clone());
        run_blocking(move || match pool.xattr(&object, CLAIM_XATTR)? {
            Some(raw) if raw == disk.as_bytes() => Ok(Claim::Ours),
            Some(raw) => Ok(Claim::Other(String::from_utf8_lossy(&raw).into_owned())),
            None => {
                pool.set_xattr(&object, CLAIM_XATTR, disk.as_bytes())?;
                Ok(Claim::Ours)
            }
        })
        .await
    }

    /// Resolves when the lease is lost.
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        let _ = lost.wait_for(|lost| *lost).await;
        // A closed channel without loss means the renewer ended: treat as lost.
    }

    /// Stops renewing and lets go of the lease as `how` says.
    pub async fn release(self, how: Release) {
        self.renewer.abort();
        let still_held = self.token.is_held();
        self.token.held.store(false, Ordering::Release);
        let (done_tx, done) = watch::channel(false);
        releases_in_flight().insert(self.object.clone(), done.clone());
        let (pool, object, cookie) = (self.pool.clone(), self.object.clone(), self.cookie.clone());
        let disk = self.disk.clone();
        let progress = match how {
            Release::After(step) => Some(Progress {
                job_id: self.job_id.clone(),
                step_done: step,
            }),
            _ => None,
        };
        let result = run_blocking(move || {
            if !still_held {
                // Lost: another worker may hold it now; touch nothing of it.
                return Ok(());
            }
            match how {
                // Another disk's job claimed the image: its claim and progress stay.
                Release::End
                    if pool
                        .xattr(&object, CLAIM_XATTR)?
                        .is_some_and(|claim| claim != disk.as_bytes()) =>
                {
                    pool.unlock(&object, LOCK_NAME, &cookie)
                }
                // Removing the object drops the lock with it, in one step: no other worker
                // can take the lock in between and lose it to the removal.
                Release::End => pool.remove_object(&object),
                Release::Continue | Release::After(_) => {
                    if let Some(progress) = progress {
                        pool.set_xattr(&object, PROGRESS_XATTR, &progress.encode())?;
                    }
                    pool.unlock(&object, LOCK_NAME, &cookie)
                }
            }
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

/// Renews the lock every third of `duration`. A failed renewal is retried every twelfth; when
/// none has succeeded for two thirds of the lease, the lease is lost.
async fn renew(
    pool: Pool,
    object: String,
    cookie: String,
    duration: Duration,
    token: LeaseToken,
    lost_tx: watch::Sender<bool>,
) {
    let mut last_renewed = Instant::now();
    let mut wait = duration / 3;
    loop {
        tokio::time::sleep(wait).await;
        let (p, o, c) = (pool.clone(), object.clone(), cookie.clone());
        let renewed =
            run_blocking(move || p.lock_exclusive(&o, LOCK_NAME, &c, duration, true)).await;
        let give_up = match renewed {
            Ok(()) => {
                last_renewed = Instant::now();
                wait = duration / 3;
                false
            }
            Err(e) if e.is_transient() && last_renewed.elapsed() < duration * 2 / 3 => {
                warn!(error = %e, "lease renewal failed; retrying");
                wait = duration / 12;
                false
            }
            Err(e) => {
                error!(error = %e, "lease lost; stopping work on this job");
                true
            }
        };
        if give_up {
            token.held.store(false, Ordering::Release);
            let _ = lost_tx.send(true);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_through_its_xattr_value() {
        let progress = Progress {
            job_id: "53e413643f1445e4a93b284bb4bf83cb".into(),
            step_done: Step::Flatten,
        };
        assert_eq!(Progress::decode(&progress.encode()), Some(progress));
        assert_eq!(Progress::decode(b"garbage"), None);
    }

    #[test]
    fn a_token_of_no_lease_refuses_every_change() {
        let token = LeaseToken::not_held(Uuid::nil());
        let err = token.check("snapshot").expect_err("not held");
        assert_eq!(err.kind, RbdErrorKind::Cancelled);
        assert!(err.is_transient());
    }
}
