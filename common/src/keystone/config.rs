//! How snapq authenticates with Keystone, and the request body that says so.

use std::fmt;
use std::time::Duration;

use serde_json::{json, Value};

use super::error::KeystoneError;

/// Where Keystone is and who snapq is there.
#[derive(Clone)]
pub struct KeystoneConfig {
    /// Identity endpoint, e.g. `http://keystone:5000` or `.../v3`.
    pub auth_url: String,
    pub credentials: Credentials,
    /// Deadline for each Keystone request.
    pub request_timeout: Duration,
    /// A PEM file of CA certificates to trust for an `https` Keystone, beside the system's.
    pub ca_file: Option<std::path::PathBuf>,
}

/// snapq's identity, as `clouds.yaml`'s `password` and `v3applicationcredential` auth types
/// have it.
#[derive(Clone)]
pub enum Credentials {
    /// A user's password, scoped to a project.
    Password {
        username: String,
        user_domain_name: String,
        password: String,
        project_name: String,
        project_domain_name: String,
    },
    /// An application credential (scoped to the project it was made in), by id or by name
    /// with its user.
    ApplicationCredential {
        id: Option<String>,
        name: Option<String>,
        username: Option<String>,
        user_domain_name: String,
        secret: String,
    },
}

impl Credentials {
    /// Who these credentials are, for error messages (never a secret).
    pub fn who(&self) -> String {
        match self {
            Credentials::Password {
                username,
                user_domain_name,
                project_name,
                ..
            } => format!(
                "the password of user '{username}' (domain {user_domain_name}) for project '{project_name}'"
            ),
            Credentials::ApplicationCredential { id: Some(id), .. } => {
                format!("application credential {id}")
            }
            Credentials::ApplicationCredential { name, username, .. } => format!(
                "application credential '{}' of user '{}'",
                name.as_deref().unwrap_or("?"),
                username.as_deref().unwrap_or("?")
            ),
        }
    }

    /// The option to check when Keystone refuses these credentials.
    pub fn secret_option(&self) -> &'static str {
        match self {
            Credentials::Password { .. } => {
                "SNAPQ_KEYSTONE_PASSWORD/--keystone-password-file and --keystone-username"
            }
            Credentials::ApplicationCredential { .. } => {
                "SNAPQ_KEYSTONE_APPLICATION_CREDENTIAL_SECRET/--keystone-application-credential-secret-file and --keystone-application-credential-id"
            }
        }
    }

    /// The secret, to mask should Keystone ever echo it.
    pub(super) fn secret(&self) -> &str {
        match self {
            Credentials::Password { password, .. } => password,
            Credentials::ApplicationCredential { secret, .. } => secret,
        }
    }

    /// The body of `POST /v3/auth/tokens`.
    pub(super) fn auth_body(&self) -> Value {
        match self {
            Credentials::Password {
                username,
                user_domain_name,
                password,
                project_name,
                project_domain_name,
            } => json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": username,
                    "domain": {"name": user_domain_name},
                    "password": password,
                }}},
                "scope": {"project": {"name": project_name, "domain": {"name": project_domain_name}}},
            }}),
            Credentials::ApplicationCredential {
                id,
                name,
                username,
                user_domain_name,
                secret,
            } => {
                let mut credential = json!({"secret": secret});
                if let Some(id) = id {
                    credential["id"] = json!(id);
                } else {
                    credential["name"] = json!(name);
                    credential["user"] =
                        json!({"name": username, "domain": {"name": user_domain_name}});
                }
                json!({"auth": {"identity": {
                    "methods": ["application_credential"],
                    "application_credential": credential,
                }}})
            }
        }
    }

    pub(super) fn validate(&self) -> Result<(), KeystoneError> {
        let missing = |option: &'static str| KeystoneError::InvalidConfig {
            option,
            reason: "must be set".to_string(),
        };
        let blank = |s: &str| s.trim().is_empty();
        match self {
            Credentials::Password {
                username,
                password,
                project_name,
                ..
            } => {
                if blank(username) {
                    return Err(missing("--keystone-username (SNAPQ_KEYSTONE_USERNAME)"));
                }
                if blank(project_name) {
                    return Err(missing(
                        "--keystone-project-name (SNAPQ_KEYSTONE_PROJECT_NAME)",
                    ));
                }
                if password.is_empty() {
                    return Err(missing(
                        "the Keystone password (SNAPQ_KEYSTONE_PASSWORD or --keystone-password-file)",
                    ));
                }
            }
            Credentials::ApplicationCredential {
                id,
                name,
                username,
                secret,
                ..
            } => {
                if id.is_none() && (name.is_none() || username.is_none()) {
                    return Err(missing(
                        "--keystone-application-credential-id (or its name with --keystone-username)",
                    ));
                }
                if secret.is_empty() {
                    return Err(missing("the application credential secret (SNAPQ_KEYSTONE_APPLICATION_CREDENTIAL_SECRET or --keystone-application-credential-secret-file)"));
                }
            }
        }
        Ok(())
    }
}

impl KeystoneConfig {
    /// `.../v3/auth/tokens` for the configured identity endpoint.
    pub(super) fn tokens_url(&self) -> Result<String, KeystoneError> {
        let invalid = |reason: String| KeystoneError::InvalidConfig {
            option: "--keystone-auth-url (SNAPQ_KEYSTONE_AUTH_URL)",
            reason,
        };
        let base = self.auth_url.trim().trim_end_matches('/');
        let parsed = reqwest::Url::parse(base).map_err(|e| invalid(format!("'{base}': {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid(format!("'{base}': not an http(s) URL")));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid("must not contain credentials".to_string()));
        }
        let base = base.strip_suffix("/v3").unwrap_or(base);
        Ok(format!("{base}/v3/auth/tokens"))
    }
}

/// Shows who, never the secret.
impl fmt::Debug for KeystoneConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeystoneConfig")
            .field("auth_url", &self.auth_url)
            .field("credentials", &self.credentials.who())
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password() -> Credentials {
        Credentials::Password {
            username: "snapq".into(),
            user_domain_name: "Default".into(),
            password: "pw-1".into(),
            project_name: "service".into(),
            project_domain_name: "Default".into(),
        }
    }

    #[test]
    fn auth_bodies_follow_keystone_v3() {
        let body = password().auth_body();
        assert_eq!(body["auth"]["identity"]["methods"][0], "password");
        assert_eq!(
            body["auth"]["identity"]["password"]["user"]["name"],
            "snapq"
        );
        assert_eq!(body["auth"]["scope"]["project"]["name"], "service");
        let by_id = Credentials::ApplicationCredential {
            id: Some("ac-1".into()),
            name: None,
            username: None,
            user_domain_name: "Default".into(),
            secret: "s".into(),
        }
        .auth_body();
        assert_eq!(
            by_id["auth"]["identity"]["application_credential"]["id"],
            "ac-1"
        );
        assert!(
            by_id["auth"].get("scope").is_none(),
            "an application credential has its own scope"
        );
    }

    #[test]
    fn config_errors_name_the_option_and_never_the_secret() {
        let mut config = KeystoneConfig {
            auth_url: "http://ks:5000/v3/".into(),
            credentials: password(),
            request_timeout: Duration::from_secs(5),
            ca_file: None,
        };
        assert_eq!(
            config.tokens_url().unwrap(),
            "http://ks:5000/v3/auth/tokens"
        );
        config.auth_url = "ftp://ks".into();
        assert!(config
            .tokens_url()
            .unwrap_err()
            .to_string()
            .contains("--keystone-auth-url"));
        assert!(!format!("{config:?}").contains("pw-1"));
        let Credentials::Password { password, .. } = &mut config.credentials else {
            unreachable!()
        };
        password.clear();
        let err = config.credentials.validate().unwrap_err().to_string();
        assert!(err.contains("SNAPQ_KEYSTONE_PASSWORD"), "{err}");
    }
}
