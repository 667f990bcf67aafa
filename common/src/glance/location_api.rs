//! Which API registers a location, as configured and as detected: a leaf the client, its
//! configuration and the location calls all use.

use std::sync::atomic::{AtomicU8, Ordering};

/// Which call registers a location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocationApi {
    /// The new API if `GET /versions` lists v2.17 or later (asked once per client), else the
    /// legacy one; also falls back to the legacy one if the new call answers 404, 405 or 501.
    Auto,
    /// `POST /v2/images/{id}/locations` (asynchronous: follow with `wait_active`). Needs the
    /// `service` role for `rbd://` URLs.
    New,
    /// `PATCH /v2/images/{id}` adding to `/locations` (synchronous). Needs
    /// `show_multiple_locations = True` in Glance, else 403.
    Legacy,
}

/// The API that `Auto` settled on, shared by a client's clones.
#[derive(Debug, Default)]
pub(super) struct DetectedApi(AtomicU8);

const UNKNOWN: u8 = 0;
const NEW: u8 = 1;
const LEGACY: u8 = 2;

impl DetectedApi {
    pub(super) fn get(&self) -> Option<LocationApi> {
        match self.0.load(Ordering::Relaxed) {
            NEW => Some(LocationApi::New),
            LEGACY => Some(LocationApi::Legacy),
            _ => None,
        }
    }

    pub(super) fn set(&self, api: LocationApi) {
        let value = match api {
            LocationApi::New => NEW,
            LocationApi::Legacy => LEGACY,
            LocationApi::Auto => UNKNOWN,
        };
        self.0.store(value, Ordering::Relaxed);
    }
}
