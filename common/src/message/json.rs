//! JSON helpers shared by the decoders and encoders: strict object parsing and key display.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Serialize;
use serde_json::{Map, Value};

use super::MessageError;

/// Keys from the wire are shown escaped and cut to this many characters in error messages, so a
/// hostile key cannot forge log lines or flood them.
const MAX_KEY_DISPLAY_CHARS: usize = 64;

/// Parses `bytes` as a JSON object, rejecting duplicate keys at any depth.
///
/// Python's `json.loads` (and `serde_json`) silently keep the last of two equal keys; a request
/// carrying two `args` or two `disk` is malformed or an attempt to confuse, so it is refused.
/// `what` names the document in errors (`message body`, `oslo.message`).
pub(crate) fn parse_object(bytes: &[u8], what: &str) -> Result<Map<String, Value>, MessageError> {
    let not_json = |e: serde_json::Error| MessageError::NotJson {
        detail: format!("{what}: {e}"),
    };
    serde_json::from_slice::<NoDuplicateKeys>(bytes).map_err(not_json)?;
    match serde_json::from_slice::<Value>(bytes).map_err(not_json)? {
        Value::Object(map) => Ok(map),
        other => Err(MessageError::Envelope {
            detail: format!("{what} is a JSON {}, expected an object", type_name(&other)),
        }),
    }
}

/// Serializes one of this module's wire types.
///
/// serde_json fails only on non-string map keys or a failing `Serialize` impl; the wire types are
/// plain structs, strings and `serde_json::Value`s, which can always be written.
pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("wire types always serialize to JSON")
}

/// A wire key made safe to put in an error message: escaped and length-capped.
pub(crate) fn display_key(key: &str) -> String {
    let mut shown: String = key
        .chars()
        .take(MAX_KEY_DISPLAY_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if key.chars().nth(MAX_KEY_DISPLAY_CHARS).is_some() {
        shown.push_str("...");
    }
    shown
}

/// The JSON type of `value`, for error messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Walks a JSON document and fails on the first object with a repeated key.
struct NoDuplicateKeys;

impl<'de> Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NoDuplicateKeysVisitor)
    }
}

struct NoDuplicateKeysVisitor;

impl<'de> Visitor<'de> for NoDuplicateKeysVisitor {
    type Value = NoDuplicateKeys;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<NoDuplicateKeys, E> {
        Ok(NoDuplicateKeys)
    }

    fn visit_i64<E>(self, _: i64) -> Result<NoDuplicateKeys, E> {
        Ok(NoDuplicateKeys)
    }

    fn visit_u64<E>(self, _: u64) -> Result<NoDuplicateKeys, E> {
        Ok(NoDuplicateKeys)
    }

    fn visit_f64<E>(self, _: f64) -> Result<NoDuplicateKeys, E> {
        Ok(NoDuplicateKeys)
    }

    fn visit_str<E>(self, _: &str) -> Result<NoDuplicateKeys, E> {
        Ok(NoDuplicateKeys)
    }

    fn visit_unit<E>(self) -> Result<NoDuplicateKeys, E> {
        Ok(NoDuplicateKeys)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NoDuplicateKeys, A::Error> {
        while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(NoDuplicateKeys)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NoDuplicateKeys, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key \"{}\"",
                    display_key(&key)
                )));
            }
            map.next_value::<NoDuplicateKeys>()?;
            seen.insert(key);
        }
        Ok(NoDuplicateKeys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_object_rejects_duplicate_keys_at_any_depth() {
        for doc in [
            r#"{"a": 1, "a": 2}"#,
            r#"{"a": {"b": 1, "b": 1}}"#,
            r#"{"a": [{"b": 1, "\u0062": 2}]}"#,
        ] {
            let err = parse_object(doc.as_bytes(), "message body").unwrap_err();
            assert!(
                matches!(&err, MessageError::NotJson { detail } if detail.contains("duplicate key")),
                "{doc}: {err}"
            );
        }
    }

    #[test]
    fn parse_object_accepts_equal_keys_in_different_objects() {
        let map = parse_object(br#"{"a": {"k": 1}, "b": {"k": 2}}"#, "message body").unwrap();
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn parse_object_rejects_non_objects_and_bad_json() {
        assert!(matches!(
            parse_object(b"[1, 2]", "message body"),
            Err(MessageError::Envelope { .. })
        ));
        assert!(matches!(
            parse_object(b"{\"a\": ", "message body"),
            Err(MessageError::NotJson { .. })
        ));
        assert!(matches!(
            parse_object(b"\xff\xfe", "message body"),
            Err(MessageError::NotJson { .. })
        ));
    }

    #[test]
    fn display_key_escapes_and_truncates() {
        assert_eq!(display_key("a\nb"), "a\\nb");
        let long = "k".repeat(100);
        assert_eq!(display_key(&long), format!("{}...", "k".repeat(64)));
    }
}
