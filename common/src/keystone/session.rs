//! A Keystone session: one token at a time, renewed before it runs out and on demand after a
//! 401, shared by every clone of the session.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderValue, ACCEPT};
use reqwest::StatusCode;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::catalog::{find_endpoint, CatalogEntry};
use super::config::KeystoneConfig;
use super::error::{keystone_message, KeystoneError};

/// A token is renewed when less than this much of its life is left, or a third of its
/// lifetime for shorter-lived tokens (keystoneauth1 uses the same two minutes).
const RENEW_BEFORE: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct KeystoneSession {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: KeystoneConfig,
    tokens_url: String,
    current: Mutex<Option<Token>>,
    issued: AtomicU64,
}

struct Token {
    value: String,
    /// When to get a new one, on this host's monotonic clock (Keystone's own timestamps give
    /// the lifetime, so clock skew between the hosts does not matter).
    renew_at: Instant,
    catalog: Vec<CatalogEntry>,
    roles: Vec<String>,
}

#[derive(Deserialize)]
struct TokenReply {
    token: TokenBody,
}

#[derive(Deserialize)]
struct TokenBody {
    expires_at: String,
    issued_at: String,
    #[serde(default)]
    catalog: Vec<CatalogEntry>,
    #[serde(default)]
    roles: Vec<Role>,
}

#[derive(Deserialize)]
struct Role {
    name: String,
}

impl KeystoneSession {
    /// Checks the configuration and authenticates once, so wrong credentials fail at start.
    pub async fn connect(config: KeystoneConfig) -> Result<KeystoneSession, KeystoneError> {
        config.credentials.validate()?;
        let tokens_url = config.tokens_url()?;
        crate::tls::install_provider();
        let mut builder = reqwest::Client::builder();
        if let Some(path) = &config.ca_file {
            let option = "--keystone-ca-file (SNAPQ_KEYSTONE_CA_FILE)";
            let roots = crate::tls::reqwest_roots(option, path).map_err(|e| {
                KeystoneError::InvalidConfig {
                    option,
                    reason: e.to_string(),
                }
            })?;
            builder = builder.tls_certs_merge(roots);
        }
        let http = builder
            .connect_timeout(config.request_timeout)
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| KeystoneError::InvalidConfig {
                option: "--keystone-auth-url (SNAPQ_KEYSTONE_AUTH_URL)",
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        let session = KeystoneSession {
            inner: Arc::new(Inner {
                http,
                config,
                tokens_url,
                current: Mutex::new(None),
                issued: AtomicU64::new(0),
            }),
        };
        session.token().await?;
        Ok(session)
    }

    /// A valid token: the current one, or a new one if it is near its end.
    pub async fn token(&self) -> Result<String, KeystoneError> {
        let mut current = self.inner.current.lock().await;
        if let Some(token) = current.as_ref().filter(|t| Instant::now() < t.renew_at) {
            return Ok(token.value.clone());
        }
        let fresh = self.authenticate().await?;
        let value = fresh.value.clone();
        *current = Some(fresh);
        Ok(value)
    }

    /// Forgets `used` (a service answered 401 to it), so the next [`token`](Self::token)
    /// authenticates anew. A token another caller already replaced is left alone.
    pub async fn invalidate(&self, used: &str) {
        let mut current = self.inner.current.lock().await;
        if current.as_ref().is_some_and(|t| t.value == used) {
            *current = None;
        }
    }

    /// The URL of the `interface` endpoint of `service_type` in the token's catalog.
    pub async fn endpoint(
        &self,
        service_type: &str,
        interface: &str,
        region: Option<&str>,
    ) -> Result<String, KeystoneError> {
        self.token().await?;
        let current = self.inner.current.lock().await;
        let catalog = current
            .as_ref()
            .map(|t| t.catalog.as_slice())
            .unwrap_or(&[]);
        find_endpoint(catalog, service_type, interface, region)
    }

    /// The roles of the current token.
    pub async fn roles(&self) -> Vec<String> {
        let current = self.inner.current.lock().await;
        current
            .as_ref()
            .map(|t| t.roles.clone())
            .unwrap_or_default()
    }

    /// How many tokens this session has obtained.
    pub fn tokens_issued(&self) -> u64 {
        self.inner.issued.load(Ordering::Relaxed)
    }

    /// The secret of the credentials, to mask in error texts of services.
    pub fn mask(&self, text: &str) -> String {
        let secret = self.inner.config.credentials.secret();
        if secret.is_empty() {
            text.to_string()
        } else {
            text.replace(secret, "<redacted>")
        }
    }

    async fn authenticate(&self) -> Result<Token, KeystoneError> {
        let config = &self.inner.config;
        let auth_url = config.auth_url.clone();
        let sent = Instant::now();
        let response = self
            .inner
            .http
            .post(&self.inner.tokens_url)
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .json(&config.credentials.auth_body())
            .send()
            .await
            .map_err(|e| KeystoneError::Transport {
                auth_url: auth_url.clone(),
                detail: transport_detail(&e),
            })?;
        let status = response.status();
        let subject = response
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response
            .bytes()
            .await
            .map_err(|e| KeystoneError::Transport {
                auth_url: auth_url.clone(),
                detail: transport_detail(&e),
            })?;
        if status == StatusCode::UNAUTHORIZED {
            return Err(KeystoneError::Refused {
                auth_url,
                who: config.credentials.who(),
                status: status.as_u16(),
                message: self.mask(&keystone_message(&body)),
                option: config.credentials.secret_option(),
            });
        }
        if !status.is_success() {
            return Err(KeystoneError::Http {
                auth_url,
                what: "token request",
                status: status.as_u16(),
                message: self.mask(&keystone_message(&body)),
            });
        }
        let decode_error = |detail: String| KeystoneError::Decode {
            auth_url: auth_url.clone(),
            detail,
        };
        let value = subject.ok_or_else(|| decode_error("no X-Subject-Token header".into()))?;
        let reply: TokenReply =
            serde_json::from_slice(&body).map_err(|e| decode_error(e.to_string()))?;
        let lifetime = lifetime(&reply.token.issued_at, &reply.token.expires_at)
            .ok_or_else(|| decode_error("unreadable issued_at/expires_at".into()))?;
        let margin = RENEW_BEFORE.min(lifetime / 3);
        self.inner.issued.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(lifetime_s = lifetime.as_secs(), "keystone token obtained");
        Ok(Token {
            value,
            renew_at: sent + lifetime.saturating_sub(margin),
            catalog: reply.token.catalog,
            roles: reply.token.roles.into_iter().map(|r| r.name).collect(),
        })
    }
}

/// `expires_at - issued_at` of a Keystone token.
fn lifetime(issued_at: &str, expires_at: &str) -> Option<Duration> {
    let time = |s: &str| humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).ok();
    let (issued, expires): (SystemTime, SystemTime) = (time(issued_at)?, time(expires_at)?);
    expires.duration_since(issued).ok()
}

fn transport_detail(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut detail = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    detail
}

/// Shows who the session is, never a token or secret.
impl fmt::Debug for KeystoneSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeystoneSession")
            .field("config", &self.inner.config)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lifetime_comes_from_keystone_timestamps() {
        assert_eq!(
            lifetime("2026-12-01T12:00:00.000000Z", "2026-12-01T12:01:00.000000Z"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            lifetime("2026-12-01T12:01:00Z", "2026-12-01T12:00:00Z"),
            None
        );
    }
}
