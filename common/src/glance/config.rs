//! How to reach Glance, validated once in [`GlanceClient::new`](super::GlanceClient::new).

use std::fmt;
use std::time::Duration;

use super::error::GlanceError;
use super::location_api::LocationApi;

/// Where Glance is and how to talk to it.
#[derive(Clone)]
pub struct GlanceConfig {
    /// Image API endpoint without the version, e.g. `https://glance:9292`.
    pub url: String,
    /// A PEM file of CA certificates to trust for an `https` Glance, beside the system's.
    pub ca_file: Option<std::path::PathBuf>,
    /// Sent as `X-Auth-Token`; never logged or put in errors. Registering an `rbd://` location
    /// through the new API needs the `service` role.
    pub token: Option<String>,
    /// Tokens from Keystone instead (snapq's own service identity); not with `token`.
    pub keystone: Option<crate::keystone::KeystoneSession>,
    /// Deadline for every request except the upload, whose length is set by its body.
    pub request_timeout: Duration,
    pub location_api: LocationApi,
}

impl GlanceConfig {
    /// The endpoint without trailing slashes, checked to be an `http://` URL.
    pub(super) fn validated_base_url(&self) -> Result<String, GlanceError> {
        let invalid = |reason: String| GlanceError::InvalidConfig {
            field: "url",
            reason,
        };
        let base = self.url.trim().trim_end_matches('/');
        // Credentials belong in `token`; a URL holding them is never echoed in the error.
        let credentials = || invalid("must not contain credentials".to_string());
        let parsed = match reqwest::Url::parse(base) {
            Ok(parsed) => parsed,
            Err(_) if base.contains('@') => return Err(credentials()),
            Err(e) => return Err(invalid(format!("'{base}': {e}"))),
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(credentials());
        }
        match parsed.scheme() {
            "http" | "https" => {}
            other => return Err(invalid(format!("'{base}': unsupported scheme '{other}'"))),
        }
        if parsed.host().is_none() {
            return Err(invalid(format!("'{base}': no host")));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            // Not echoed: a query may hold a secret too.
            return Err(invalid("must not have a query or fragment".to_string()));
        }
        if self.token.is_some() && self.keystone.is_some() {
            return Err(GlanceError::InvalidConfig {
                field: "token",
                reason: "cannot be set together with Keystone credentials".to_string(),
            });
        }
        if self.request_timeout.is_zero() {
            return Err(GlanceError::InvalidConfig {
                field: "request_timeout",
                reason: "must be greater than zero".to_string(),
            });
        }
        Ok(base.to_string())
    }
}

/// Shows whether a token is set, never the token.
impl fmt::Debug for GlanceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlanceConfig")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("keystone", &self.keystone)
            .field("request_timeout", &self.request_timeout)
            .field("location_api", &self.location_api)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> GlanceConfig {
        GlanceConfig {
            url: url.to_string(),
            ca_file: None,
            token: Some("s3cret-token".to_string()),
            keystone: None,
            request_timeout: Duration::from_secs(10),
            location_api: LocationApi::Auto,
        }
    }

    #[test]
    fn base_url_loses_trailing_slashes() {
        let base = config("http://127.0.0.1:9292//")
            .validated_base_url()
            .unwrap();
        assert_eq!(base, "http://127.0.0.1:9292");
    }

    #[test]
    fn accepts_https_and_rejects_garbage_credentials_and_zero_timeout() {
        assert_eq!(
            config("https://glance/").validated_base_url().unwrap(),
            "https://glance"
        );
        for url in ["glance:9292", "ftp://glance", "http://u:p@glance"] {
            let err = config(url).validated_base_url().unwrap_err();
            assert!(
                matches!(err, GlanceError::InvalidConfig { field: "url", .. }),
                "{url}"
            );
        }
        let mut zero = config("http://glance");
        zero.request_timeout = Duration::ZERO;
        assert!(matches!(
            zero.validated_base_url(),
            Err(GlanceError::InvalidConfig {
                field: "request_timeout",
                ..
            })
        ));
    }

    #[test]
    fn url_errors_never_echo_credentials_or_queries() {
        for url in [
            "https://u:s3cret-pw@glance",
            "ftp://u:s3cret-pw@glance",
            "http://u:s3cret-pw@gla nce",
            "http://glance/?token=s3cret-pw",
        ] {
            let err = config(url).validated_base_url().unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("s3cret-pw"), "{url}: {shown}");
        }
    }

    #[test]
    fn debug_hides_the_token() {
        let shown = format!("{:?}", config("http://glance"));
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
