//! [`RequestContext`]: oslo.messaging's request context, flattened on the wire as `_context_*`.

use std::fmt;

use serde_json::{Map, Value};
use uuid::Uuid;

use super::names::describe_char;
use super::MessageError;

/// Prefix oslo.messaging puts before each context key when it flattens the context into the
/// message (`pack_context`).
pub const CONTEXT_KEY_PREFIX: &str = "_context_";

/// oslo.utils `strutils._SANITIZE_KEYS` (oslo.utils 7), lower-case, plus `passwd`, `pswd` and
/// `credential`. Matched as substrings of the lower-cased key, as oslo.utils matches them.
pub(crate) const SECRET_KEY_WORDS: &[&str] = &[
    "adminpass",
    "admin_pass",
    "password",
    "admin_password",
    "auth_token",
    "new_pass",
    "auth_password",
    "secret_uuid",
    "secret",
    "sys_pswd",
    "token",
    "configdrive",
    "chappassword",
    "encrypted_key",
    "private_key",
    "fernetkey",
    "sslkey",
    "passphrase",
    "cephclusterfsid",
    "octaviaheartbeatkey",
    "rabbitcookie",
    "cephmanilaclientkey",
    "pacemakerremoteauthkey",
    "designaterndckey",
    "cephadminkey",
    "heatauthencryptionkey",
    "cephclientkey",
    "keystonecredential",
    "barbicansimplecryptokek",
    "cephrgwkey",
    "swifthashsuffix",
    "migrationsshkey",
    "cephmdskey",
    "cephmonkey",
    "chapsecret",
    "passwd",
    "pswd",
    "credential",
];

/// Longest request id accepted; oslo's are `req-` plus a hyphenated UUID, 40 bytes.
const MAX_REQUEST_ID_BYTES: usize = 128;

/// The caller's request context (oslo.context `to_dict()`: `request_id`, `project_id`,
/// `auth_token`, `roles`, ...), keyed without the `_context_` prefix.
///
/// Every key is kept so that it can be passed on, but the values of secret keys (see
/// [`RequestContext::is_secret_key`]) never appear in `Debug` output, and there is no `Display`.
#[derive(Clone, Default, PartialEq)]
pub struct RequestContext {
    values: Map<String, Value>,
}

impl RequestContext {
    /// A context for a request that starts here: only `request_id`, `req-<uuid4>` as oslo.context
    /// generates it.
    pub fn new_request() -> RequestContext {
        let mut values = Map::new();
        values.insert(
            "request_id".to_owned(),
            Value::String(format!("req-{}", Uuid::new_v4().hyphenated())),
        );
        RequestContext { values }
    }

    /// The request id, for correlating logs across services.
    pub fn request_id(&self) -> Option<&str> {
        self.values.get("request_id").and_then(Value::as_str)
    }

    /// The global request id oslo propagates across services, if the caller set one.
    pub fn global_request_id(&self) -> Option<&str> {
        self.values.get("global_request_id").and_then(Value::as_str)
    }

    /// The value of one context key (without the `_context_` prefix).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    /// Sets one context key (without the `_context_` prefix), returning the previous value.
    pub fn insert(&mut self, key: impl Into<String>, value: Value) -> Option<Value> {
        self.values.insert(key.into(), value)
    }

    /// All keys and values. Callers that log them must apply [`RequestContext::is_secret_key`].
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The project the request acts for: `project_id`, else oslo.context's older `project`
    /// (or `tenant`) key. None when the caller sent none.
    pub fn project(&self) -> Option<&str> {
        ["project_id", "project", "tenant"]
            .iter()
            .filter_map(|key| self.values.get(*key).and_then(Value::as_str))
            .find(|project| !project.is_empty())
    }

    /// Whether the value of `key` is a credential. A key is secret when, lower-cased, it contains
    /// any word of oslo.utils' `strutils._SANITIZE_KEYS` (the list `mask_password` and
    /// `mask_dict_password` use: `auth_token`, `token`, `password`, `secret`, `passphrase`,
    /// `private_key`, ...) or one of a few more spellings (`passwd`, `credential`).
    pub fn is_secret_key(key: &str) -> bool {
        let key = key.to_ascii_lowercase();
        SECRET_KEY_WORDS.iter().any(|word| key.contains(word))
    }

    /// A copy without the secret keys, for everything snapq writes or shows: republished
    /// messages, replies, logs. Nothing snapq does needs the caller's credentials.
    pub fn without_secrets(&self) -> RequestContext {
        let mut values = self.values.clone();
        remove_secret_keys(&mut values);
        RequestContext { values }
    }

    /// Collects the `_context_*` keys of a decoded message, checking the ids that end up in logs.
    pub(crate) fn from_message(
        message: &Map<String, Value>,
    ) -> Result<RequestContext, MessageError> {
        let values: Map<String, Value> = message
            .iter()
            .filter_map(|(key, value)| {
                let key = key.strip_prefix(CONTEXT_KEY_PREFIX)?;
                (!key.is_empty()).then(|| (key.to_owned(), value.clone()))
            })
            .collect();
        for (key, field) in [
            ("request_id", "_context_request_id"),
            ("global_request_id", "_context_global_request_id"),
        ] {
            if let Some(value) = values.get(key) {
                check_request_id(field, value)?;
            }
        }
        Ok(RequestContext { values })
    }

    /// The context as oslo flattens it: `(_context_<key>, value)` pairs.
    pub(crate) fn wire_entries(&self) -> impl Iterator<Item = (String, &Value)> {
        self.values
            .iter()
            .map(|(k, v)| (format!("{CONTEXT_KEY_PREFIX}{k}"), v))
    }
}

/// Request ids are written to every log line of a job, so they must be short printable strings
/// (or null, which oslo.context sends for an unset global request id).
fn check_request_id(field: &'static str, value: &Value) -> Result<(), MessageError> {
    let reason = match value {
        Value::Null => return Ok(()),
        Value::String(s) if s.len() > MAX_REQUEST_ID_BYTES => {
            format!(
                "is {} bytes, over the limit of {MAX_REQUEST_ID_BYTES}",
                s.len()
            )
        }
        Value::String(s) => match s.chars().find(|c| c.is_control()) {
            Some(c) => format!("must not contain {}", describe_char(c)),
            None => return Ok(()),
        },
        other => format!("must be a string, found {}", super::json::type_name(other)),
    };
    Err(MessageError::invalid(field, reason))
}

impl fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Redacted;
        impl fmt::Debug for Redacted {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("<redacted>")
            }
        }

        let mut map = f.debug_map();
        for (key, value) in &self.values {
            if RequestContext::is_secret_key(key) {
                map.entry(key, &Redacted);
            } else {
                map.entry(key, value);
            }
        }
        map.finish()
    }
}

/// Removes every secret-named key (see [`RequestContext::is_secret_key`]) from `object`, at
/// any depth (objects inside objects and arrays). Whether anything was removed.
pub(super) fn remove_secret_keys(object: &mut Map<String, Value>) -> bool {
    let before = object.len();
    object.retain(|key, _| !RequestContext::is_secret_key(key));
    let mut removed = object.len() != before;
    for value in object.values_mut() {
        removed |= remove_secrets_in(value);
    }
    removed
}

fn remove_secrets_in(value: &mut Value) -> bool {
    match value {
        Value::Object(object) => remove_secret_keys(object),
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |removed, item| remove_secrets_in(item) | removed),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn context_of(message: Value) -> Result<RequestContext, MessageError> {
        match message {
            Value::Object(map) => RequestContext::from_message(&map),
            _ => panic!("test message must be an object"),
        }
    }

    #[test]
    fn new_request_has_oslo_style_request_id() {
        let ctx = RequestContext::new_request();
        let id = ctx.request_id().unwrap();
        let uuid = id.strip_prefix("req-").unwrap();
        assert_eq!(Uuid::parse_str(uuid).unwrap().get_version_num(), 4);
        assert_eq!(uuid.len(), 36);
    }

    #[test]
    fn collects_only_context_keys_without_prefix() {
        let ctx = context_of(json!({
            "method": "snapshot_instance",
            "_unique_id": "53e413643f1445e4a93b284bb4bf83cb",
            "_context_request_id": "req-check-0001",
            "_context_roles": ["admin"],
            "_context_": "ignored: no key",
        }))
        .unwrap();
        assert_eq!(ctx.len(), 2);
        assert_eq!(ctx.request_id(), Some("req-check-0001"));
        assert_eq!(ctx.get("roles"), Some(&json!(["admin"])));
    }

    #[test]
    fn debug_redacts_secret_values() {
        let ctx = context_of(json!({
            "_context_auth_token": "gAAAAAB-token-value",
            "_context_service_token": "svc-token-value",
            "_context_Admin_Password": "hunter2",
            "_context_client_secret": "s3cr3t",
            "_context_user_id": "u1",
        }))
        .unwrap();
        let shown = format!("{ctx:?}");
        for secret in [
            "gAAAAAB-token-value",
            "svc-token-value",
            "hunter2",
            "s3cr3t",
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("\"auth_token\": <redacted>"), "{shown}");
        assert!(shown.contains("\"user_id\": String(\"u1\")"), "{shown}");
    }

    #[test]
    fn without_secrets_removes_secret_keys_at_any_depth() {
        let ctx = context_of(json!({
            "_context_auth_token": "gAAAAAB-top",
            "_context_service_catalog": [{"endpoints": [{"url": "http://x", "token": "nested-1"}]}],
            "_context_user_auth_plugin": {"password": "nested-2", "username": "demo"},
            "_context_user_id": "u1",
        }))
        .unwrap();
        let clean = ctx.without_secrets();
        let shown = serde_json::to_string(&clean.iter().collect::<Vec<_>>()).unwrap();
        for secret in ["gAAAAAB-top", "nested-1", "nested-2"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("demo") && shown.contains("http://x"),
            "{shown}"
        );
    }

    #[test]
    fn an_empty_project_id_does_not_hide_the_project() {
        let ctx = context_of(json!({
            "_context_project_id": "",
            "_context_project": "p-42",
        }))
        .unwrap();
        assert_eq!(ctx.project(), Some("p-42"));
        let none = context_of(json!({"_context_project_id": ""})).unwrap();
        assert_eq!(none.project(), None);
    }

    #[test]
    fn rejects_request_ids_unfit_for_logs() {
        for (message, field) in [
            (
                json!({"_context_request_id": "req-1\nFAKE LOG LINE"}),
                "_context_request_id",
            ),
            (json!({"_context_request_id": 7}), "_context_request_id"),
            (
                json!({"_context_global_request_id": "r".repeat(129)}),
                "_context_global_request_id",
            ),
        ] {
            let err = context_of(message).unwrap_err();
            assert_eq!(err.field(), Some(field), "{err}");
        }
        let ctx = context_of(json!({"_context_global_request_id": null})).unwrap();
        assert_eq!(ctx.global_request_id(), None);
    }
}
