//! Waiting for an image to become `active`: the new location API answers 202 before Glance has
//! tried the location, and reports a failure only by leaving the image `queued`.

use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::client::GlanceClient;
use super::error::GlanceError;
use super::image::{progress, ImageRecord, Progress};

/// Shortest pause between polls, whatever the caller asks.
const MIN_POLL: Duration = Duration::from_millis(10);

impl GlanceClient {
    /// Polls the image every `poll` until it is `active` and returns it. A status it cannot
    /// leave for `active` (killed, deleted, deactivated, …) is [`GlanceError::BadState`]; still
    /// queued/saving/importing/uploading after `timeout` is [`GlanceError::NotActive`].
    /// Errors of the polls themselves are returned as they are.
    pub async fn wait_active(
        &self,
        id: Uuid,
        timeout: Duration,
        poll: Duration,
    ) -> Result<ImageRecord, GlanceError> {
        let started = Instant::now();
        let deadline = started + timeout;
        loop {
            let image = self.get_image(id).await?;
            match progress(&image.status) {
                Progress::Active => return Ok(image),
                Progress::Failed => {
                    return Err(GlanceError::BadState {
                        id,
                        status: image.status,
                    })
                }
                Progress::Pending => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(GlanceError::NotActive {
                    id,
                    status: image.status,
                    waited: now - started,
                });
            }
            let pause = poll.max(MIN_POLL).min(deadline - now);
            tracing::trace!(%id, status = %image.status, ?pause, "glance image not active yet");
            tokio::time::sleep(pause).await;
        }
    }
}
