//! oslo.messaging's v2.0 envelope, and the driver keys every message carries.
//!
//! On the wire a message body is `{"oslo.version": "2.0", "oslo.message": "<JSON text>"}`: the
//! inner dict is JSON-encoded a second time into a string (`oslo_messaging/_drivers/common.py`,
//! `serialize_msg` / `deserialize_msg`). Bodies without the envelope are oslo's "1.0" format,
//! which no supported oslo release sends; they are refused.

use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::json::{display_key, parse_object, to_json, type_name};
use super::{MessageError, MAX_MESSAGE_BYTES};

/// The only envelope version oslo.messaging has defined.
pub const OSLO_ENVELOPE_VERSION: &str = "2.0";

const VERSION_KEY: &str = "oslo.version";
const MESSAGE_KEY: &str = "oslo.message";

/// Wraps an inner dict in the v2.0 envelope.
pub(crate) fn encode<T: Serialize + ?Sized>(inner: &T) -> Vec<u8> {
    #[derive(Serialize)]
    struct Envelope<'a> {
        #[serde(rename = "oslo.version")]
        version: &'a str,
        #[serde(rename = "oslo.message")]
        message: &'a str,
    }
    to_json(&Envelope {
        version: OSLO_ENVELOPE_VERSION,
        message: &to_json(inner),
    })
    .into_bytes()
}

/// Checks the size and the envelope of `body` and returns the inner dict.
pub(crate) fn decode(body: &[u8]) -> Result<Map<String, Value>, MessageError> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(MessageError::TooLarge {
            size: body.len(),
            limit: MAX_MESSAGE_BYTES,
        });
    }
    let outer = parse_object(body, "message body")?;
    match outer.get(VERSION_KEY) {
        None => {
            return Err(envelope_error(format!(
                "missing {VERSION_KEY} (un-enveloped oslo.messaging 1.0 messages are not accepted)"
            )))
        }
        Some(Value::String(v)) if v == OSLO_ENVELOPE_VERSION => {}
        Some(Value::String(v)) => {
            return Err(MessageError::UnsupportedVersion {
                version: display_key(v),
            })
        }
        Some(other) => {
            return Err(envelope_error(format!(
                "{VERSION_KEY} must be a string, found {}",
                type_name(other)
            )))
        }
    }
    let inner = match outer.get(MESSAGE_KEY) {
        None => return Err(envelope_error(format!("missing {MESSAGE_KEY}"))),
        Some(Value::String(inner)) => inner,
        Some(other) => {
            return Err(envelope_error(format!(
                "{MESSAGE_KEY} must be a string holding JSON, found {}",
                type_name(other)
            )))
        }
    };
    if let Some(key) = outer
        .keys()
        .find(|k| k.as_str() != VERSION_KEY && k.as_str() != MESSAGE_KEY)
    {
        return Err(envelope_error(format!(
            "unexpected key \"{}\" beside {VERSION_KEY} and {MESSAGE_KEY}",
            display_key(key)
        )));
    }
    parse_object(inner.as_bytes(), MESSAGE_KEY)
}

fn envelope_error(detail: String) -> MessageError {
    MessageError::Envelope { detail }
}

/// A fresh `_unique_id`: uuid4 as 32 lowercase hex digits, as oslo's `_add_unique_id` makes it.
/// Consumers use it to drop redelivered duplicates.
pub(crate) fn new_unique_id() -> String {
    Uuid::new_v4().simple().to_string()
}

/// Reads the required `_unique_id` of an inner dict.
pub(crate) fn unique_id(inner: &Map<String, Value>) -> Result<String, MessageError> {
    const FIELD: &str = "_unique_id";
    let id = required_str(inner, FIELD, FIELD)?;
    if id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(id.to_owned())
    } else {
        Err(MessageError::invalid(
            FIELD,
            "expected 32 lowercase hex digits (uuid4 hex)",
        ))
    }
}

/// Checks a reply correlation value (`_msg_id`, `_reply_q`): the reply queue is used as an AMQP
/// routing key, a short string of at most 255 bytes; both end up in logs, so only visible ASCII.
pub(crate) fn check_routing_name(field: &'static str, s: &str) -> Result<(), MessageError> {
    if s.is_empty() || s.len() > 255 {
        Err(MessageError::invalid(
            field,
            format!("must be 1 to 255 bytes long, found {}", s.len()),
        ))
    } else if !s.bytes().all(|b| b.is_ascii_graphic()) {
        Err(MessageError::invalid(
            field,
            "must contain only visible ASCII characters",
        ))
    } else {
        Ok(())
    }
}

/// A required string member `key` of `map`; errors call it `field`.
pub(crate) fn required_str<'m>(
    map: &'m Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<&'m str, MessageError> {
    optional_str(map, key, field)?.ok_or(MessageError::MissingField { field })
}

/// An optional string member `key` of `map`; errors call it `field`.
pub(crate) fn optional_str<'m>(
    map: &'m Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<&'m str>, MessageError> {
    match map.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(MessageError::invalid(
            field,
            format!("must be a string, found {}", type_name(other)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn encode_double_encodes_the_inner_dict() {
        let body = encode(&json!({"method": "m", "args": {}}));
        let outer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(outer["oslo.version"], "2.0");
        let inner = outer["oslo.message"].as_str().unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(inner).unwrap(),
            json!({"method": "m", "args": {}})
        );
        assert_eq!(decode(&body).unwrap()["method"], "m");
    }

    #[test]
    fn decode_rejects_bad_envelopes_naming_the_key() {
        let cases: [(&[u8], &str); 8] = [
            (b"{\"oslo.version\": \"2.0\", ", "not valid JSON"),
            (
                br#"{"method": "snapshot_instance", "args": {}}"#,
                "missing oslo.version",
            ),
            (br#"{"oslo.version": "2.0"}"#, "missing oslo.message"),
            (
                br#"{"oslo.version": 2.0, "oslo.message": "{}"}"#,
                "oslo.version must be a string",
            ),
            (
                br#"{"oslo.version": "2.0", "oslo.message": {"method": "x"}}"#,
                "oslo.message must be a string",
            ),
            (
                br#"{"oslo.version": "2.0", "oslo.message": "{\"a\": "}"#,
                "oslo.message: ",
            ),
            (
                br#"{"oslo.version": "2.0", "oslo.message": "[]"}"#,
                "oslo.message is a JSON array",
            ),
            (
                br#"{"oslo.version": "2.0", "oslo.message": "{}", "x": 1}"#,
                "unexpected key \"x\"",
            ),
        ];
        for (body, expected) in cases {
            let err = decode(body).unwrap_err();
            assert!(err.to_string().contains(expected), "{err} !~ {expected}");
        }
    }

    #[test]
    fn decode_rejects_other_envelope_versions() {
        let err = decode(br#"{"oslo.version": "1.0", "oslo.message": "{}"}"#).unwrap_err();
        assert!(matches!(&err, MessageError::UnsupportedVersion { version } if version == "1.0"));
        assert_eq!(err.field(), Some("oslo.version"));
    }

    #[test]
    fn decode_rejects_oversize_bodies_before_parsing() {
        let body = vec![b'x'; MAX_MESSAGE_BYTES + 1];
        let err = decode(&body).unwrap_err();
        assert!(matches!(
            err,
            MessageError::TooLarge { size, limit } if size == MAX_MESSAGE_BYTES + 1 && limit == MAX_MESSAGE_BYTES
        ));
    }

    #[test]
    fn unique_ids_are_uuid4_hex() {
        let id = new_unique_id();
        let inner = json!({ "_unique_id": id });
        let Value::Object(map) = inner else {
            unreachable!()
        };
        assert_eq!(unique_id(&map).unwrap(), id);
        for bad in [
            json!("53E413643F1445E4A93B284BB4BF83CB"),
            json!("53e41364"),
            json!(5),
        ] {
            let Value::Object(map) = json!({ "_unique_id": bad }) else {
                unreachable!()
            };
            assert_eq!(unique_id(&map).unwrap_err().field(), Some("_unique_id"));
        }
    }
}
