//! What snapq may keep of a message it did not write: the body without the caller's secrets,
//! and, for a body it cannot accept, where the caller waits for an answer.
//!
//! Every message snapq republishes (checkpoints, retry tiers, the dead-letter queue, the
//! parking lot) goes through [`without_secrets`] first, so no token or password the caller put
//! in its request context ever sits in a queue snapq writes to.

use std::sync::OnceLock;

use regex::bytes::Regex;
use serde_json::{Map, Value};

use super::context::remove_secret_keys;
use super::envelope::check_routing_name;
use super::json::to_json;
use super::request::{is_oslo_reply_queue, ReplyTo};

/// Placeholder written where a secret stood in a body that is not valid JSON.
pub const REDACTED: &str = "<redacted>";

/// Largest body searched for a reply address. Bigger bodies are refused unread, as oslo's
/// server would fail to read them too; the caller then times out.
const MAX_SALVAGE_BYTES: usize = 16 << 20;

/// `body` without secret values. An oslo envelope (or a bare JSON object) loses every
/// secret-named key at any depth of its message (`_context_auth_token`, `_context_password`,
/// ...) and is re-encoded; a body that is not JSON has the value after each secret-named key
/// replaced by `"<redacted>"`. A body with no secret comes back byte for byte as sent.
pub fn without_secrets(body: &[u8]) -> Vec<u8> {
    match structured(body) {
        Some(Structured::Envelope { version, mut inner }) => {
            if remove_secret_keys(&mut inner) {
                let mut outer = Map::new();
                outer.insert("oslo.version".into(), version);
                outer.insert(
                    "oslo.message".into(),
                    Value::String(to_json(&Value::Object(inner))),
                );
                to_json(&Value::Object(outer)).into_bytes()
            } else {
                body.to_vec()
            }
        }
        Some(Structured::Bare(mut object)) => {
            if remove_secret_keys(&mut object) {
                to_json(&Value::Object(object)).into_bytes()
            } else {
                body.to_vec()
            }
        }
        None => redact_text(body),
    }
}

/// Where to answer a `call` whose body was refused: its `_msg_id` and `_reply_q`, if the body
/// is JSON enough to hold them and the reply queue has oslo's shape (`reply_<32 hex>`). Never
/// an arbitrary queue.
pub fn reply_to_of(body: &[u8]) -> Option<ReplyTo> {
    if body.len() > MAX_SALVAGE_BYTES {
        return None;
    }
    let inner = match structured(body)? {
        Structured::Envelope { inner, .. } => inner,
        Structured::Bare(object) => object,
    };
    let msg_id = inner.get("_msg_id")?.as_str()?;
    let reply_queue = inner.get("_reply_q")?.as_str()?;
    check_routing_name("_msg_id", msg_id).ok()?;
    is_oslo_reply_queue(reply_queue).then(|| ReplyTo {
        msg_id: msg_id.to_owned(),
        reply_queue: reply_queue.to_owned(),
    })
}

enum Structured {
    /// `{"oslo.version": v, "oslo.message": "<object>"}`.
    Envelope {
        version: Value,
        inner: Map<String, Value>,
    },
    /// Any other JSON object (oslo's un-enveloped 1.0 form, or garbage that is still JSON).
    Bare(Map<String, Value>),
}

fn structured(body: &[u8]) -> Option<Structured> {
    let Ok(Value::Object(outer)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let is_envelope = outer.len() == 2
        && outer.contains_key("oslo.version")
        && outer.get("oslo.message").is_some_and(Value::is_string);
    if !is_envelope {
        return Some(Structured::Bare(outer));
    }
    let mut outer = outer;
    let version = outer.remove("oslo.version")?;
    let Some(Value::String(text)) = outer.remove("oslo.message") else {
        return None;
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(inner)) => Some(Structured::Envelope { version, inner }),
        // The envelope is fine but its message is not an object: scrub it as text.
        _ => None,
    }
}

/// Removes secret-named keys at any depth; true if any was removed.
/// For bodies that are not JSON: after every key that names a secret (quoted, maybe with
/// escaped quotes as inside `oslo.message`), the value up to the next `,` or `}` is replaced.
/// Over-redacting a broken body is fine; it is kept only for an operator to look at.
fn redact_text(body: &[u8]) -> Vec<u8> {
    static SECRET_VALUE: OnceLock<Regex> = OnceLock::new();
    let pattern = SECRET_VALUE.get_or_init(|| {
        let words = super::context::SECRET_KEY_WORDS.join("|");
        // A key holding a secret word, its closing quote (maybe escaped), the colon, then the
        // value. The pattern is built from a fixed word list, so it always compiles.
        Regex::new(&format!(
            r#"(?i)([A-Za-z0-9_.\-]*(?:{words})[A-Za-z0-9_.\-]*\\*"?\s*:\s*)[^,}}]*"#
        ))
        .unwrap_or_else(|e| unreachable!("the secret-key pattern is fixed and valid: {e}"))
    });
    pattern
        .replace_all(body, format!("${{1}}\"{REDACTED}\"").as_bytes())
        .into_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::message::envelope;

    fn call_with_secrets() -> Vec<u8> {
        envelope::encode(&json!({
            "method": "snapshot_instance",
            "args": {"disk": "vms/6f1c2e0a-1111-4a2b-9c3d-000000000001_disk",
                     "image_id": "0b5e7f3c-2222-4d5e-8f90-000000000002",
                     "image_name": "n"},
            "version": "1.0",
            "_msg_id": "ce820b81ad344cf494161f9ed9f9fb46",
            "_reply_q": "reply_a1e5e719f5c14657bd26c0f25b796d27",
            "_unique_id": "d36aff8ce3554fee9c592d253ba4d7c1",
            "_context_auth_token": "gAAAA-SECRET-1",
            "_context_service_token": "SECRET-2",
            "_context_user_password": "SECRET-3",
            "_context_client_secret": "SECRET-4",
            "_context_auth_token_info": {"token": {"id": "SECRET-5"}},
            "_context_request_id": "req-1",
            "_context_project_id": "p1",
        }))
    }

    fn text(body: &[u8]) -> String {
        String::from_utf8_lossy(body).into_owned()
    }

    #[test]
    fn secrets_leave_a_valid_request_that_still_decodes() {
        let cleaned = without_secrets(&call_with_secrets());
        assert!(!text(&cleaned).contains("SECRET"), "{}", text(&cleaned));
        let request = crate::message::SnapshotRequest::decode(&cleaned).expect("still valid");
        assert_eq!(request.context.request_id(), Some("req-1"));
        assert_eq!(request.context.project(), Some("p1"));
        assert!(request.reply.is_some());
    }

    #[test]
    fn a_body_without_secrets_is_kept_byte_for_byte() {
        let body = envelope::encode(&json!({"method": "x", "_context_user_id": "u1"}));
        assert_eq!(without_secrets(&body), body);
        let garbage = b"{\"oslo.version\": \"2.0\", ".to_vec();
        assert_eq!(without_secrets(&garbage), garbage);
    }

    #[test]
    fn secrets_in_bodies_that_are_not_json_are_redacted() {
        let broken = br#"{"oslo.version": "2.0", "oslo.message": "{\"_context_auth_token\": \"SECRET-A\", \"_context_password\": \"SECRET-B\", \"x\": "#;
        let cleaned = text(&without_secrets(broken));
        assert!(!cleaned.contains("SECRET"), "{cleaned}");
        assert!(cleaned.contains(REDACTED), "{cleaned}");
        let bare = br#"{"_context_token": "SECRET-C", "method": }"#;
        assert!(!text(&without_secrets(bare)).contains("SECRET"));
    }

    #[test]
    fn bare_json_objects_lose_their_secrets_too() {
        let body = br#"{"method": "snapshot_instance", "_context_auth_token": "SECRET-D"}"#;
        let cleaned = text(&without_secrets(body));
        assert!(!cleaned.contains("SECRET"), "{cleaned}");
        assert!(cleaned.contains("snapshot_instance"), "{cleaned}");
    }

    #[test]
    fn reply_address_is_salvaged_from_a_refused_body_only_when_oslo_shaped() {
        let mut inner = json!({
            "method": "no_such_method",
            "_msg_id": "ce820b81ad344cf494161f9ed9f9fb46",
            "_reply_q": "reply_a1e5e719f5c14657bd26c0f25b796d27",
        });
        let reply = reply_to_of(&envelope::encode(&inner)).expect("a reply address");
        assert_eq!(reply.reply_queue, "reply_a1e5e719f5c14657bd26c0f25b796d27");
        for queue in [
            "snapq",
            "amq.gen-x",
            "reply_A1E5E719F5C14657BD26C0F25B796D27",
            "reply_",
        ] {
            inner["_reply_q"] = json!(queue);
            assert_eq!(reply_to_of(&envelope::encode(&inner)), None, "{queue}");
        }
        assert_eq!(reply_to_of(b"not json"), None);
    }
}
