//! The snapq worker: consumes snapshot requests and turns an RBD instance disk into an active
//! Glance image without the data leaving Ceph.
//!
//! `consumer` keeps a connection to the broker and takes deliveries; `delivery` runs one step
//! of a job per delivery under the job's `lease` and checkpoints the job in its message
//! headers; the `steps` each *ensure* their outcome, so a job can be resumed from any point;
//! `cleanup` removes what a failed job left behind.

pub mod cleanup;
pub mod consumer;
pub mod context;
pub mod dead_letter;
pub mod delivery;
pub mod error;
pub mod failpoint;
pub mod fallback;
pub mod gate;
pub mod lease;
pub mod names;
pub mod policy;
pub mod provenance;
pub mod reply;
pub mod steps;

pub use consumer::{run_worker, Role, WorkerSettings};
pub use error::{Disposition, JobError, Refusal};
pub use policy::SourcePolicy;
