//! The snapq worker: consumes snapshot requests and turns an RBD instance disk into an active
//! Glance image without the data leaving Ceph.
//!
//! `consumer` takes deliveries off the work queue; `pipeline` runs the `steps` in order, each
//! of which *ensures* its outcome (checks Ceph/Glance first, acts only if needed), so a job
//! can be run again from any point; `cleanup` removes what a failed job left behind.

pub mod cleanup;
pub mod consumer;
pub mod context;
pub mod error;
pub mod names;
pub mod pipeline;
pub mod reply;
pub mod steps;

pub use consumer::{run_worker, WorkerSettings};
pub use error::{Disposition, JobError};
pub use pipeline::JobOutcome;
