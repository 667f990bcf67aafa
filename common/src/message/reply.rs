//! [`RpcReply`]: the answer to an oslo `call`, published to the caller's reply queue.

use serde::Serialize;
use serde_json::{Map, Value};

use super::envelope::{self, check_routing_name, optional_str, required_str};
use super::json::{display_key, parse_object, to_json, type_name};
use super::MessageError;

/// oslo's reply (`amqpdriver.py` `ReplyWaiter`): `{"result", "failure", "ending": true,
/// "_msg_id", "_unique_id"}` in the v2.0 envelope, sent to the default exchange with the
/// request's `_reply_q` as routing key.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcReply {
    /// The request's `_msg_id`, which the caller matches replies on.
    pub msg_id: String,
    /// The method's return value; `None` is JSON `null` (Python `None`).
    pub result: Option<Value>,
    /// Set when the method raised; the caller re-raises it.
    pub failure: Option<RpcFailure>,
}

/// A remote exception as oslo serializes it (`serialize_remote_exception`). The caller's oslo
/// re-raises `module.class` if the module is in its `allowed_remote_exmods`, else a
/// `RemoteError` carrying `class` and `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcFailure {
    /// Exception class name, e.g. `SnapshotFailed`.
    pub class: String,
    /// Python module of the class, e.g. `snapq.exceptions`.
    pub module: String,
    /// `str(exception)`.
    pub message: String,
}

impl RpcFailure {
    pub fn new(
        class: impl Into<String>,
        module: impl Into<String>,
        message: impl Into<String>,
    ) -> RpcFailure {
        RpcFailure {
            class: class.into(),
            module: module.into(),
            message: message.into(),
        }
    }
}

/// Keys an oslo reply may carry besides the `_`-prefixed driver keys.
const REPLY_KEYS: [&str; 3] = ["result", "failure", "ending"];

impl RpcReply {
    /// A successful reply carrying `result`.
    pub fn success(msg_id: impl Into<String>, result: Value) -> RpcReply {
        RpcReply {
            msg_id: msg_id.into(),
            result: Some(result),
            failure: None,
        }
    }

    /// A reply that makes the caller raise `failure`.
    pub fn failure(msg_id: impl Into<String>, failure: RpcFailure) -> RpcReply {
        RpcReply {
            msg_id: msg_id.into(),
            result: None,
            failure: Some(failure),
        }
    }

    /// The full AMQP body, with a fresh `_unique_id`. `failure` is written as oslo does: a JSON
    /// *string* holding `{"class", "module", "message", "tb", "args", "kwargs"}`.
    pub fn encode(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct WireFailure<'a> {
            class: &'a str,
            module: &'a str,
            message: &'a str,
            tb: [&'a str; 0],
            args: [&'a str; 1],
            kwargs: Map<String, Value>,
        }

        #[derive(Serialize)]
        struct WireReply<'a> {
            result: &'a Option<Value>,
            failure: Option<String>,
            ending: bool,
            #[serde(rename = "_msg_id")]
            msg_id: &'a str,
            #[serde(rename = "_unique_id")]
            unique_id: String,
        }

        let failure = self.failure.as_ref().map(|f| {
            to_json(&WireFailure {
                class: &f.class,
                module: &f.module,
                message: &f.message,
                tb: [],
                args: [&f.message],
                kwargs: Map::new(),
            })
        });
        envelope::encode(&WireReply {
            result: &self.result,
            failure,
            ending: true,
            msg_id: &self.msg_id,
            unique_id: envelope::new_unique_id(),
        })
    }

    /// Strictly decodes a reply body. Errors name the offending field. Never panics.
    pub fn decode(body: &[u8]) -> Result<RpcReply, MessageError> {
        let inner = envelope::decode(body)?;
        if let Some(key) = inner
            .keys()
            .find(|k| !k.starts_with('_') && !REPLY_KEYS.contains(&k.as_str()))
        {
            return Err(MessageError::invalid(
                display_key(key),
                "unknown key in an RPC reply",
            ));
        }

        let msg_id = required_str(&inner, "_msg_id", "_msg_id")?;
        check_routing_name("_msg_id", msg_id)?;
        envelope::unique_id(&inner)?;
        match inner.get("ending") {
            None | Some(Value::Bool(_)) => {}
            Some(other) => {
                return Err(MessageError::invalid(
                    "ending",
                    format!("must be a boolean, found {}", type_name(other)),
                ))
            }
        }
        let result = match inner.get("result") {
            None | Some(Value::Null) => None,
            Some(value) => Some(value.clone()),
        };
        let failure = match inner.get("failure") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(decode_failure(text)?),
            Some(other) => {
                return Err(MessageError::invalid(
                    "failure",
                    format!("must be a JSON string or null, found {}", type_name(other)),
                ))
            }
        };
        Ok(RpcReply {
            msg_id: msg_id.to_owned(),
            result,
            failure,
        })
    }
}

/// `tb`, `args` and `kwargs` are Python-side detail and are not kept.
fn decode_failure(text: &str) -> Result<RpcFailure, MessageError> {
    let failure = parse_object(text.as_bytes(), "failure")
        .map_err(|err| MessageError::invalid("failure", err.to_string()))?;
    let field = |key: &str, field: &'static str| -> Result<String, MessageError> {
        Ok(optional_str(&failure, key, field)?
            .ok_or(MessageError::MissingField { field })?
            .to_owned())
    };
    Ok(RpcFailure {
        class: field("class", "failure.class")?,
        module: field("module", "failure.module")?,
        message: field("message", "failure.message")?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const MSG_ID: &str = "ce820b81ad344cf494161f9ed9f9fb46";

    fn inner_of(body: &[u8]) -> Map<String, Value> {
        envelope::decode(body).unwrap()
    }

    #[test]
    fn success_reply_round_trips_in_oslo_shape() {
        let reply = RpcReply::success(MSG_ID, json!({"image_id": "abc", "method": "direct"}));
        let body = reply.encode();
        let inner = inner_of(&body);
        assert_eq!(
            inner["result"],
            json!({"image_id": "abc", "method": "direct"})
        );
        assert_eq!(inner["failure"], Value::Null);
        assert_eq!(inner["ending"], json!(true));
        assert_eq!(inner["_msg_id"], json!(MSG_ID));
        assert!(envelope::unique_id(&inner).is_ok());
        assert_eq!(RpcReply::decode(&body).unwrap(), reply);
    }

    #[test]
    fn failure_is_encoded_as_a_json_string() {
        let reply = RpcReply::failure(
            MSG_ID,
            RpcFailure::new(
                "SnapshotFailed",
                "snapq.exceptions",
                "flatten failed: \"EIO\"",
            ),
        );
        let body = reply.encode();
        let inner = inner_of(&body);
        assert_eq!(inner["result"], Value::Null);
        let Some(Value::String(failure)) = inner.get("failure") else {
            panic!("failure is not a string: {inner:?}");
        };
        assert_eq!(
            serde_json::from_str::<Value>(failure).unwrap(),
            json!({
                "class": "SnapshotFailed",
                "module": "snapq.exceptions",
                "message": "flatten failed: \"EIO\"",
                "tb": [],
                "args": ["flatten failed: \"EIO\""],
                "kwargs": {},
            })
        );
        assert_eq!(RpcReply::decode(&body).unwrap(), reply);
    }

    #[test]
    fn null_result_decodes_as_none() {
        let reply = RpcReply {
            msg_id: MSG_ID.into(),
            result: None,
            failure: None,
        };
        assert_eq!(RpcReply::decode(&reply.encode()).unwrap(), reply);
    }

    #[test]
    fn decodes_python_style_failure_with_traceback() {
        let failure = json!({
            "class": "RemoteError", "module": "oslo_messaging.rpc.client", "message": "boom",
            "tb": ["Traceback (most recent call last):\n", "..."], "args": ["boom"], "kwargs": {},
        })
        .to_string();
        let body = envelope::encode(&json!({
            "result": null, "failure": failure, "ending": true,
            "_msg_id": MSG_ID, "_unique_id": "dc53e5653c834470a8b46b9d2e63a4e0",
        }));
        let reply = RpcReply::decode(&body).unwrap();
        assert_eq!(
            reply.failure,
            Some(RpcFailure::new(
                "RemoteError",
                "oslo_messaging.rpc.client",
                "boom"
            ))
        );
    }

    #[test]
    fn malformed_replies_name_the_field() {
        let valid = json!({
            "result": 1, "failure": null, "ending": true,
            "_msg_id": MSG_ID, "_unique_id": "dc53e5653c834470a8b46b9d2e63a4e0",
        });
        let with = |key: &str, value: Option<Value>| {
            let mut inner = valid.as_object().unwrap().clone();
            match value {
                Some(value) => inner.insert(key.to_owned(), value),
                None => inner.remove(key),
            };
            envelope::encode(&inner)
        };
        for (body, field) in [
            (with("_msg_id", None), "_msg_id"),
            (with("_msg_id", Some(json!(""))), "_msg_id"),
            (with("_unique_id", None), "_unique_id"),
            (with("ending", Some(json!("yes"))), "ending"),
            (with("failure", Some(json!({"class": "X"}))), "failure"),
            (with("failure", Some(json!("not json"))), "failure"),
            (
                with("failure", Some(json!(r#"{"module": "m", "message": "x"}"#))),
                "failure.class",
            ),
            (with("results", Some(json!(1))), "results"),
        ] {
            let err = RpcReply::decode(&body).unwrap_err();
            assert_eq!(err.field(), Some(field), "{err}");
        }
    }
}
