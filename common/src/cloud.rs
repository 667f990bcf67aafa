//! A Glance client from the command line: with a static token, or as snapq's own Keystone
//! service identity with Glance found in the service catalog.

use crate::config::{ConfigError, GlanceArgs};
use crate::glance::{GlanceClient, GlanceConfig, GlanceError};
use crate::keystone::{KeystoneError, KeystoneSession};

/// Why no Glance client could be made.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Keystone(#[from] KeystoneError),
    #[error(transparent)]
    Glance(#[from] GlanceError),
}

/// The Glance client the options ask for. With Keystone this authenticates at once, so wrong
/// credentials fail at start, with an error naming the option.
pub async fn glance_client(args: &GlanceArgs) -> Result<GlanceClient, CloudError> {
    let mut config: GlanceConfig = args.config()?;
    let timeout = config.request_timeout;
    if let Some(keystone) = args.keystone.config(timeout)? {
        if config.token.is_some() {
            return Err(ConfigError::Conflict {
                what: "Glance's credentials",
                first: "SNAPQ_GLANCE_TOKEN/--glance-token-file",
                second: "--keystone-auth-url",
            }
            .into());
        }
        let session = KeystoneSession::connect(keystone).await?;
        if config.url.trim().is_empty() {
            config.url = session
                .endpoint(
                    "image",
                    &args.keystone.interface,
                    args.keystone.region_name.as_deref(),
                )
                .await?;
            tracing::info!(url = %config.url, interface = %args.keystone.interface, "Glance found in the Keystone catalog");
        }
        config.keystone = Some(session);
    } else if config.url.trim().is_empty() {
        return Err(ConfigError::Missing {
            what: "the Glance endpoint",
            hint: "set --glance-url/SNAPQ_GLANCE_URL, or --keystone-auth-url to find it in the catalog",
        }
        .into());
    }
    Ok(GlanceClient::new(config)?)
}
