//! Glance Image API v2 client: create an image record, register an RBD location on it (or
//! upload its bytes), wait until it is `active`, delete it.
//!
//! Two ways exist to point an image at data already in Glance's Ceph pool:
//! - the new location API (Image API 2.17+, `POST /v2/images/{id}/locations`): asynchronous,
//!   202 even when Glance later fails to use the location, so the image just stays `queued` —
//!   always follow it with [`GlanceClient::wait_active`];
//! - the legacy `PATCH` of `/locations/-`: synchronous, but Glance answers 403 unless
//!   `show_multiple_locations = True` (a known security risk, OSSN-0065).
//!
//! Errors classify themselves ([`GlanceError::is_transient`], [`GlanceError::refuses_location`])
//! so the worker can choose between retrying, the full-copy fallback and parking the job.
//! The token is sent as `X-Auth-Token` and never appears in logs, `Debug` output or errors.

mod client;
mod config;
mod error;
#[cfg(test)]
mod fake_server;
mod image;
mod location;
mod location_api;
mod wait;

pub use client::GlanceClient;
pub use config::GlanceConfig;
pub use error::GlanceError;
pub use image::{ImageLocation, ImageRecord, NewImage, TaskLookup, TaskRecord};
pub use location_api::LocationApi;
