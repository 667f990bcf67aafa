//! What a worker runs with: its role and settings, validated at start and then passed down
//! as plain values. A leaf module: it imports nothing else of the worker but the source policy.

use std::time::Duration;

use snapq_common::amqp::Topology;
use snapq_common::glance::GlanceClient;
use snapq_common::job::{now_ms, HistoryEntry};
use snapq_common::rbd::{Cluster, Pool};

use crate::policy::SourcePolicy;

/// Which queue a worker serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The work queue: the fast path, one step per delivery.
    Work,
    /// The dead-letter queue: cleanup, full-copy fallback, parking lot.
    DeadLetter,
}

/// What to do about a location import Glance lost (see `import_watch`): its import lock stays
/// on the image for 60 to 120 minutes and nothing but the lock's expiry can lift it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostImportAction {
    /// Clean up and make the image by a full copy (which Glance accepts under the lock).
    Copy,
    /// Keep waiting; register again once Glance lets the lock expire.
    Wait,
}

#[derive(Debug, Clone, Copy)]
pub struct LostImport {
    pub action: LostImportAction,
    /// How long a task queued after the job's must have run ahead of it before the job's
    /// task counts as lost.
    pub after: Duration,
}

impl LostImport {
    /// The defaults of `--lost-import copy` and `--lost-import-after 120`.
    pub const DEFAULT: LostImport = LostImport {
        action: LostImportAction::Copy,
        after: Duration::from_secs(120),
    };
}

/// oslo notifications (`[oslo_messaging_notifications]`): off unless the driver is
/// `messagingv2`, as in oslo.
#[derive(Debug, Clone)]
pub struct NotificationSettings {
    pub enabled: bool,
    /// oslo's `topics`: each event goes to `<topic>.info` or `<topic>.error`.
    pub topics: Vec<String>,
    /// `snapq.<host>`, as OpenStack services name themselves.
    pub publisher_id: String,
}

impl NotificationSettings {
    pub fn off() -> NotificationSettings {
        NotificationSettings {
            enabled: false,
            topics: Vec::new(),
            publisher_id: "snapq".to_string(),
        }
    }
}

/// What a worker needs, already connected where connecting is slow.
#[derive(Clone)]
pub struct WorkerSettings {
    pub role: Role,
    pub amqp_url: String,
    /// CA certificates (PEM) to trust for an `amqps://` broker, beside the system's.
    pub amqp_ca: Option<String>,
    pub topology: Topology,
    pub cluster: Cluster,
    pub image_pool: Pool,
    pub glance: GlanceClient,
    /// Jobs run at once by this worker (also the prefetch count).
    pub concurrency: u16,
    pub active_timeout: Duration,
    /// What to do when Glance lost the job's location import.
    pub lost_import: LostImport,
    pub notifications: NotificationSettings,
    /// How long one delivery waits for a flatten before checkpointing its progress.
    pub flatten_hold: Duration,
    /// Clones whose source holds less than this many bytes are flattened in the worker;
    /// bigger ones by a Ceph manager task.
    pub flatten_in_process_below: u64,
    /// The fsid of the cluster Glance's rbd store uses; a disk in another cluster cannot be
    /// cloned into it, so such jobs go straight to the full copy. None: assume the same.
    pub glance_store_fsid: Option<String>,
    /// Which disks requests may name.
    pub source_policy: SourcePolicy,
    /// The pool holding every job's lease object, whatever pool its request names.
    pub lease_pool: Pool,
    /// Lifetime of a job's lease; renewed every third of it.
    pub lease_duration: Duration,
    /// Attempts at one step before a transient failure dead-letters the job.
    pub max_attempts: u32,
    /// How long running steps may take to finish after shutdown is requested.
    pub shutdown_grace: Duration,
    /// Name shown in RabbitMQ's connection list and in job histories.
    pub name: String,
}

impl WorkerSettings {
    /// A history line for `step` (a step name, or `full_copy`) done by this worker.
    pub fn history(&self, step: &str, took: Duration, did: &str) -> HistoryEntry {
        HistoryEntry {
            step: step.to_string(),
            worker: self.name.clone(),
            at_ms: now_ms(),
            seconds: took.as_secs_f64(),
            did: did.to_string(),
        }
    }
}
