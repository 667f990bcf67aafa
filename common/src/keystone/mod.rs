//! A Keystone v3 client for snapq's own service identity: authenticate (password or
//! application credential), find endpoints in the service catalog, keep the token fresh.
//!
//! Hand-written on the project's reqwest: `osauth`, the one maintained Rust crate, pins
//! reqwest 0.12 (a second HTTP stack in the build) and takes and returns that version's
//! request builders, and what snapq needs of Keystone is one call and a catalog walk.
//!
//! snapq acts as its own service user, not with the requesting user's token: a job may run,
//! fall back or be replayed from the parking lot days after the request, and snapq keeps no
//! token at rest (the request's `_context_auth_token` is stripped from everything it
//! republishes). The README lists the roles that identity needs.

mod catalog;
mod config;
mod error;
mod session;

pub use catalog::{CatalogEntry, Endpoint};
pub use config::{Credentials, KeystoneConfig};
pub use error::KeystoneError;
pub use session::KeystoneSession;
