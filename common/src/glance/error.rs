//! Glance failures, each knowing whether to retry, fall back to a full copy, or give up.

use std::time::Duration;

use uuid::Uuid;

/// Longest Glance error text kept in [`GlanceError::Http`].
const MESSAGE_LIMIT: usize = 300;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GlanceError {
    /// No HTTP answer: connect failure, timeout, connection reset, body stream error.
    #[error("glance {method} {path}: {detail}")]
    Transport {
        method: &'static str,
        path: String,
        detail: String,
    },
    /// Glance answered with an unexpected status.
    #[error("glance {method} {path}: HTTP {status}: {message}")]
    Http {
        method: &'static str,
        path: String,
        status: u16,
        /// Glance's error text, tags stripped, at most ~300 characters.
        message: String,
    },
    #[error("glance image {id} not found")]
    NotFound { id: Uuid },
    /// Still not `active` when the wait ran out: the new location API reports failures only by
    /// leaving the image `queued`.
    #[error("glance image {id} still '{status}' after {waited:?}")]
    NotActive {
        id: Uuid,
        status: String,
        waited: Duration,
    },
    /// The image reached a status it never leaves for `active` (killed, deleted, deactivated).
    #[error("glance image {id} is '{status}' and will not become active")]
    BadState { id: Uuid, status: String },
    #[error("glance answer to {path} is not what was expected: {detail}")]
    Decode { path: String, detail: String },
    #[error("invalid glance configuration: {field} {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    /// Glance answered 401 to a token Keystone had just issued.
    #[error("glance {method} {path}: HTTP 401 to a fresh Keystone token (can Glance reach Keystone? check its [keystone_authtoken])")]
    FreshTokenRefused { method: &'static str, path: String },
    /// No token for Glance: Keystone refused snapq's credentials or could not be reached.
    #[error("glance: {0}")]
    Keystone(#[from] crate::keystone::KeystoneError),
}

impl GlanceError {
    /// Worth retrying later: the request may succeed once Glance or the network recovers.
    pub fn is_transient(&self) -> bool {
        match self {
            GlanceError::Transport { .. }
            | GlanceError::NotActive { .. }
            | GlanceError::FreshTokenRefused { .. } => true,
            GlanceError::Http { status, .. } => *status >= 500 || *status == 429,
            GlanceError::Keystone(e) => e.is_transient(),
            _ => false,
        }
    }

    /// Glance declined to register a location (400 or 403 on the location call): a reason to
    /// upload a full copy instead.
    pub fn refuses_location(&self) -> bool {
        self.location_call_status()
            .is_some_and(|status| matches!(status, 400 | 403))
    }

    /// A 409 on the location call: the image is no longer `queued` (an earlier registration
    /// went through) or an import holds its lock (`Image has active task`). Not a refusal: look
    /// at the image to tell which.
    pub fn location_conflict(&self) -> bool {
        self.location_call_status() == Some(409)
    }

    fn location_call_status(&self) -> Option<u16> {
        match self {
            GlanceError::Http {
                method,
                path,
                status,
                ..
            } if is_location_call(method, path) => Some(*status),
            _ => None,
        }
    }
}

/// The client sends `POST …/locations` (new API) and `PATCH /v2/images/{id}` only to add a
/// location, so the request line identifies the location call.
fn is_location_call(method: &str, path: &str) -> bool {
    (method == "POST" && path.ends_with("/locations")) || method == "PATCH"
}

/// Glance's error text from a response body: the `message` of its JSON error document (sent
/// because the client asks for `application/json`), else the body with HTML tags removed.
/// Whitespace is collapsed, `secret` (the token) masked, and the result trimmed to ~300 chars.
pub(super) fn glance_message(body: &[u8], secrets: &[Option<&str>]) -> String {
    let raw = String::from_utf8_lossy(body);
    let from_json = serde_json::from_str::<serde_json::Value>(&raw)
        .ok()
        .and_then(|doc| doc.get("message")?.as_str().map(str::to_string));
    let text = match from_json {
        Some(message) => message,
        // webob's HTML page repeats the title before the text; keep what follows the heading.
        None => match raw.find("</h1>") {
            Some(at) => raw[at + "</h1>".len()..].to_string(),
            None => raw.into_owned(),
        },
    };
    let mut text = collapse_whitespace(&decode_entities(&strip_tags(&text)));
    for secret in secrets.iter().flatten().filter(|s| !s.is_empty()) {
        text = text.replace(secret, "<redacted>");
    }
    truncate(text, MESSAGE_LIMIT)
}

fn strip_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

fn decode_entities(text: &str) -> String {
    text.replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
}

fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn truncate(text: String, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_from_json_error_document() {
        let body = br#"{"message": "No image found with ID 42<br /><br />\n\n\n", "code": "404 Not Found", "title": "Not Found"}"#;
        assert_eq!(glance_message(body, &[]), "No image found with ID 42");
    }

    #[test]
    fn message_from_html_error_page() {
        let body = b"<html>\n <head>\n  <title>403 Forbidden</title>\n </head>\n <body>\n  \
            <h1>403 Forbidden</h1>\n  It&#x27;s not allowed to add locations if locations are \
            invisible.<br /><br />\n\n\n\n </body>\n</html>";
        assert_eq!(
            glance_message(body, &[]),
            "It's not allowed to add locations if locations are invisible."
        );
    }

    #[test]
    fn message_is_trimmed_and_never_contains_the_token() {
        let body = format!("token tok-123 {}", "x".repeat(1000));
        let message = glance_message(body.as_bytes(), &[None, Some("tok-123")]);
        assert!(!message.contains("tok-123"));
        // The Keystone token a request carried is masked as well as the static one.
        let echoed = glance_message(
            b"bad token ks-9 or tok-123",
            &[Some("ks-9"), Some("tok-123")],
        );
        assert_eq!(echoed, "bad token <redacted> or <redacted>");
        assert!(message.chars().count() <= MESSAGE_LIMIT + 1);
        assert!(message.starts_with("token <redacted> x"));
    }

    #[test]
    fn classification() {
        let http = |method, path: &str, status| GlanceError::Http {
            method,
            path: path.to_string(),
            status,
            message: String::new(),
        };
        assert!(http("GET", "/v2/images/x", 503).is_transient());
        assert!(http("GET", "/v2/images/x", 429).is_transient());
        assert!(!http("GET", "/v2/images/x", 400).is_transient());
        assert!(http("POST", "/v2/images/x/locations", 403).refuses_location());
        assert!(http("PATCH", "/v2/images/x", 400).refuses_location());
        assert!(!http("POST", "/v2/images/x/locations", 409).refuses_location());
        assert!(http("POST", "/v2/images/x/locations", 409).location_conflict());
        assert!(!http("GET", "/v2/images/x", 409).location_conflict());
        assert!(!http("POST", "/v2/images", 403).refuses_location());
        assert!(!http("POST", "/v2/images/x/locations", 500).refuses_location());
    }
}
