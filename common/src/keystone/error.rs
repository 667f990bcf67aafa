//! Keystone failures. None carries a secret: errors name the option to fix instead.

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeystoneError {
    #[error("invalid keystone configuration: {option} {reason}")]
    InvalidConfig {
        option: &'static str,
        reason: String,
    },
    /// Keystone refused the credentials (401): wrong password or secret, unknown user,
    /// disabled project, expired application credential.
    #[error("keystone at {auth_url} refused {who}: HTTP {status}: {message} (check {option})")]
    Refused {
        auth_url: String,
        who: String,
        status: u16,
        message: String,
        option: &'static str,
    },
    #[error("keystone {what} at {auth_url}: HTTP {status}: {message}")]
    Http {
        auth_url: String,
        what: &'static str,
        status: u16,
        message: String,
    },
    #[error("keystone at {auth_url} could not be reached: {detail}")]
    Transport { auth_url: String, detail: String },
    #[error("keystone answer from {auth_url} is not what was expected: {detail}")]
    Decode { auth_url: String, detail: String },
    #[error("the service catalog has no {interface} endpoint for service type '{service_type}'{region} (check {option})")]
    NoEndpoint {
        service_type: String,
        interface: String,
        region: String,
        option: &'static str,
    },
}

impl KeystoneError {
    /// Worth retrying later: Keystone or the network may recover.
    pub fn is_transient(&self) -> bool {
        match self {
            KeystoneError::Transport { .. } => true,
            KeystoneError::Http { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// Keystone's error text (`{"error": {"message": ...}}`), at most ~200 characters.
pub(super) fn keystone_message(body: &[u8]) -> String {
    let text = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|doc| doc["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text,
    }
}
