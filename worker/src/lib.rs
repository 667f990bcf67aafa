//! The snapq worker: consumes snapshot requests and turns an RBD instance disk into an active
//! Glance image without the data leaving Ceph.
//!
//! Read top-down: `consumer` keeps a connection to the broker and hands each delivery to its
//! role's handler, `work` (the fast path: one step per delivery under the job's `lease`) or
//! `dead_letter` (cleanup, full copy, parking lot); both act on the broker only through
//! `broker::JobMessage` (checkpoint, retry, dead-letter, park, reply, ack), and `failure`
//! decides what a failed step leads to. The `steps` each *ensure* their outcome, so a job can
//! be resumed from any point;
//! `policy` and `gate` decide whether a request may be served at all, and `provenance` marks
//! what snapq makes so that `cleanup` removes only what a failed job itself left behind.

#![forbid(unsafe_code)]

pub mod artefacts;
pub mod broker;
pub mod channels;
pub mod cleanup;
pub mod consumer;
pub mod context;
pub mod dead_letter;
pub mod decode;
pub mod error;
pub mod failpoint;
pub mod failure;
pub mod fallback;
pub mod gate;
pub mod import_watch;
pub mod lease;
pub mod names;
pub mod notify;
pub mod policy;
pub mod provenance;
pub mod purge;
pub mod reply;
pub mod settings;
pub mod steps;
pub mod work;

pub use consumer::run_worker;
pub use error::{Disposition, JobError, Refusal};
pub use policy::SourcePolicy;
pub use settings::{Role, WorkerSettings};
