//! [`SnapshotRequest`]: the `snapshot_instance` RPC as it travels inside oslo's envelope.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::context::RequestContext;
use super::envelope::{self, check_routing_name, optional_str, required_str};
use super::json::{display_key, type_name};
use super::names::{validate_glance_image_name, DiskSpec};
use super::{MessageError, METHOD_SNAPSHOT_INSTANCE, RPC_API_VERSION};

/// How the worker turns the disk into an image.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Clone a snapshot of the disk into the image pool and flatten the clone.
    #[default]
    Flatten,
}

impl SnapshotMode {
    /// The name used in `args.mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotMode::Flatten => "flatten",
        }
    }

    fn parse(s: &str) -> Result<SnapshotMode, MessageError> {
        match s {
            "flatten" => Ok(SnapshotMode::Flatten),
            other => Err(MessageError::invalid(
                "args.mode",
                format!(
                    "unknown mode \"{}\", expected \"flatten\"",
                    display_key(other)
                ),
            )),
        }
    }
}

/// Where the result of an oslo `call` goes: the reply is published to the default exchange with
/// `reply_queue` as routing key and `msg_id` as correlation. A `cast` has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    /// `_msg_id`, uuid4 hex chosen by the caller.
    pub msg_id: String,
    /// `_reply_q`, `reply_<uuid4 hex>`, declared by the caller.
    pub reply_queue: String,
}

/// A request to snapshot one RBD disk into a new Glance image.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRequest {
    /// `args.disk`: the RBD image to snapshot.
    pub disk: DiskSpec,
    /// `args.image_id`: the id of the Glance image to fill (created by the caller, queued).
    pub image_id: Uuid,
    /// `args.image_name`: 1..=255 characters, no control characters.
    pub image_name: String,
    /// `args.mode`, optional on the wire.
    pub mode: SnapshotMode,
    /// `_unique_id`: 32 lowercase hex digits, used to drop redelivered duplicates.
    pub unique_id: String,
    /// `_msg_id` and `_reply_q`, present for an oslo `call`.
    pub reply: Option<ReplyTo>,
    /// The `_context_*` keys.
    pub context: RequestContext,
}

const ARG_DISK: &str = "disk";
const ARG_IMAGE_ID: &str = "image_id";
const ARG_IMAGE_NAME: &str = "image_name";
const ARG_MODE: &str = "mode";
const KNOWN_ARGS: [&str; 4] = [ARG_DISK, ARG_IMAGE_ID, ARG_IMAGE_NAME, ARG_MODE];

/// [`RPC_API_VERSION`] as (major, minor, revision), for oslo's compatibility rule.
const API_VERSION: (u32, u32, u32) = (1, 0, 0);

impl SnapshotRequest {
    /// A cast (no reply) with a fresh `_unique_id` and a new request context.
    ///
    /// `image_name` is checked only when the message is decoded; callers taking it from users
    /// should check it first with [`validate_glance_image_name`].
    pub fn new(disk: DiskSpec, image_id: Uuid, image_name: String) -> SnapshotRequest {
        SnapshotRequest {
            disk,
            image_id,
            image_name,
            mode: SnapshotMode::default(),
            unique_id: envelope::new_unique_id(),
            reply: None,
            context: RequestContext::new_request(),
        }
    }

    /// The full AMQP body: the v2.0 envelope around the inner dict, in the key order oslo uses:
    /// `method`, `args`, `version`, [`_msg_id`, `_reply_q`, `_timeout`,] `_unique_id`,
    /// `_context_*`.
    pub fn encode(&self) -> Vec<u8> {
        envelope::encode(&WireRequest(self))
    }

    /// Strictly decodes an AMQP body. Errors name the offending field (`args.disk`,
    /// `oslo.version`, `method`, ...). Never panics.
    pub fn decode(body: &[u8]) -> Result<SnapshotRequest, MessageError> {
        let inner = envelope::decode(body)?;

        let method = required_str(&inner, "method", "method")?;
        if method != METHOD_SNAPSHOT_INSTANCE {
            return Err(MessageError::UnknownMethod {
                method: display_key(method),
            });
        }
        check_top_level_keys(&inner)?;
        check_version(&inner)?;

        let args = match inner.get("args") {
            None => return Err(MessageError::MissingField { field: "args" }),
            Some(Value::Object(args)) => args,
            Some(other) => {
                return Err(MessageError::invalid(
                    "args",
                    format!("must be an object, found {}", type_name(other)),
                ))
            }
        };
        let args = Args::decode(args)?;

        Ok(SnapshotRequest {
            disk: args.disk,
            image_id: args.image_id,
            image_name: args.image_name,
            mode: args.mode,
            unique_id: envelope::unique_id(&inner)?,
            reply: decode_reply_to(&inner)?,
            context: RequestContext::from_message(&inner)?,
        })
    }
}

/// Keys that do not start with `_` are the RPC's own (`_make_message`); oslo's driver adds only
/// `_`-prefixed ones (`_unique_id`, `_msg_id`, `_reply_q`, `_timeout`, `_context_*`), which are
/// allowed so that a newer oslo can add more.
fn check_top_level_keys(inner: &Map<String, Value>) -> Result<(), MessageError> {
    for (key, value) in inner {
        match key.as_str() {
            "method" | "args" | "version" => {}
            // oslo sends `namespace` only when the target has one; snapq's endpoint has none.
            "namespace" if value.is_null() => {}
            "namespace" => {
                return Err(MessageError::invalid(
                    "namespace",
                    "the snapq RPC endpoint has no namespace",
                ))
            }
            k if k.starts_with('_') => {}
            k => {
                return Err(MessageError::invalid(
                    display_key(k),
                    "unknown key in the RPC message",
                ))
            }
        }
    }
    Ok(())
}

/// oslo's dispatcher accepts a request when its `version` has the endpoint's major version and a
/// minor (and revision) not above the endpoint's; a missing `version` means "1.0".
fn check_version(inner: &Map<String, Value>) -> Result<(), MessageError> {
    const FIELD: &str = "version";
    let Some(requested) = optional_str(inner, FIELD, FIELD)? else {
        return Ok(());
    };
    let Some((major, minor, revision)) = parse_version(requested) else {
        return Err(MessageError::invalid(
            FIELD,
            format!(
                "\"{}\" is not a version like \"1.0\"",
                display_key(requested)
            ),
        ));
    };
    let (our_major, our_minor, our_revision) = API_VERSION;
    if major == our_major && (minor, revision) <= (our_minor, our_revision) {
        Ok(())
    } else {
        Err(MessageError::IncompatibleVersion {
            requested: display_key(requested),
            implemented: RPC_API_VERSION,
        })
    }
}

/// `major.minor` or `major.minor.revision`, decimal digits only.
fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut parts = v.split('.').map(|part| {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            part.parse::<u32>().ok()
        }
    });
    let major = parts.next()??;
    let minor = parts.next()??;
    let revision = parts.next().unwrap_or(Some(0))?;
    parts.next().is_none().then_some((major, minor, revision))
}

/// `_msg_id` and `_reply_q` come together (oslo `call`) or not at all (`cast`).
fn decode_reply_to(inner: &Map<String, Value>) -> Result<Option<ReplyTo>, MessageError> {
    let msg_id = optional_str(inner, "_msg_id", "_msg_id")?;
    let reply_queue = optional_str(inner, "_reply_q", "_reply_q")?;
    match (msg_id, reply_queue) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(MessageError::MissingField { field: "_reply_q" }),
        (None, Some(_)) => Err(MessageError::MissingField { field: "_msg_id" }),
        (Some(msg_id), Some(reply_queue)) => {
            check_routing_name("_msg_id", msg_id)?;
            check_routing_name("_reply_q", reply_queue)?;
            check_reply_queue(reply_queue)?;
            Ok(Some(ReplyTo {
                msg_id: msg_id.to_owned(),
                reply_queue: reply_queue.to_owned(),
            }))
        }
    }
}

/// oslo's reply queues are `reply_<uuid4 hex>` (`amqpdriver.py`, one per caller process). Only
/// such names are accepted, so that a request cannot make snapq publish into any other queue.
fn check_reply_queue(reply_queue: &str) -> Result<(), MessageError> {
    if is_oslo_reply_queue(reply_queue) {
        Ok(())
    } else {
        Err(MessageError::invalid(
            "_reply_q",
            "must be an oslo.messaging reply queue name, reply_ followed by 32 lowercase hex digits",
        ))
    }
}

/// Whether `name` has the shape of an oslo reply queue: `reply_` and 32 lowercase hex digits.
pub(crate) fn is_oslo_reply_queue(name: &str) -> bool {
    name.strip_prefix("reply_").is_some_and(|hex| {
        hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// The validated `args` object.
struct Args {
    disk: DiskSpec,
    image_id: Uuid,
    image_name: String,
    mode: SnapshotMode,
}

impl Args {
    fn decode(args: &Map<String, Value>) -> Result<Args, MessageError> {
        // Unknown keys first: a request meant for another endpoint (e.g. Nova's
        // `instance_uuid`) is then reported as such rather than as a missing `args.disk`.
        if let Some(key) = args.keys().find(|k| !KNOWN_ARGS.contains(&k.as_str())) {
            return Err(MessageError::invalid(
                format!("args.{}", display_key(key)),
                "unknown argument (expected disk, image_id, image_name and optionally mode)",
            ));
        }

        let disk = required_str(args, ARG_DISK, "args.disk")?;
        let disk = DiskSpec::parse("args.disk", disk)?;

        let image_id = required_str(args, ARG_IMAGE_ID, "args.image_id")?;
        let image_id = parse_image_id(image_id)?;

        let image_name = required_str(args, ARG_IMAGE_NAME, "args.image_name")?;
        validate_glance_image_name("args.image_name", image_name)?;

        // A Python caller passing `mode=None` means the default.
        let mode = match args.get(ARG_MODE) {
            None | Some(Value::Null) => SnapshotMode::default(),
            Some(Value::String(mode)) => SnapshotMode::parse(mode)?,
            Some(other) => {
                return Err(MessageError::invalid(
                    "args.mode",
                    format!("must be a string, found {}", type_name(other)),
                ))
            }
        };

        Ok(Args {
            disk,
            image_id,
            image_name: image_name.to_owned(),
            mode,
        })
    }
}

/// Glance ids are hyphenated UUIDs; the 32-digit simple form is accepted too, other forms
/// (`{...}`, `urn:uuid:`) and the nil UUID are not.
fn parse_image_id(s: &str) -> Result<Uuid, MessageError> {
    const FIELD: &str = "args.image_id";
    let parsed = match s.len() {
        32 | 36 => Uuid::try_parse(s).ok(),
        _ => None,
    };
    match parsed {
        Some(id) if id.is_nil() => Err(MessageError::invalid(FIELD, "must not be the nil UUID")),
        Some(id) => Ok(id),
        None => Err(MessageError::invalid(
            FIELD,
            format!(
                "\"{}\" is not a UUID like 0b5e7f3c-2222-4d5e-8f90-000000000002",
                display_key(s)
            ),
        )),
    }
}

/// The inner dict of a request, in oslo's key order.
struct WireRequest<'a>(&'a SnapshotRequest);

impl Serialize for WireRequest<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct WireArgs<'a> {
            disk: &'a DiskSpec,
            image_id: &'a Uuid,
            image_name: &'a str,
            mode: SnapshotMode,
        }

        let request = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("method", METHOD_SNAPSHOT_INSTANCE)?;
        map.serialize_entry(
            "args",
            &WireArgs {
                disk: &request.disk,
                image_id: &request.image_id,
                image_name: &request.image_name,
                mode: request.mode,
            },
        )?;
        map.serialize_entry("version", RPC_API_VERSION)?;
        if let Some(reply) = &request.reply {
            map.serialize_entry("_msg_id", &reply.msg_id)?;
            map.serialize_entry("_reply_q", &reply.reply_queue)?;
            // oslo's call-monitor timeout; null means the caller does not expect heartbeats.
            map.serialize_entry("_timeout", &Value::Null)?;
        }
        map.serialize_entry("_unique_id", &request.unique_id)?;
        for (key, value) in request.context.wire_entries() {
            map.serialize_entry(&key, value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::message::MAX_MESSAGE_BYTES;

    /// oslo.messaging 18.3.1 `cast`, captured (oslo-wire-vectors.md); Nova-style args.
    const OSLO_CAST: &str = r#"{"oslo.version": "2.0", "oslo.message": "{\"method\": \"snapshot_instance\", \"args\": {\"instance_uuid\": \"6f1c2e0a-1111-4a2b-9c3d-000000000001\", \"image_id\": \"0b5e7f3c-2222-4d5e-8f90-000000000002\"}, \"_unique_id\": \"53e413643f1445e4a93b284bb4bf83cb\", \"_context_request_id\": \"req-check-0001\", \"_context_project_id\": \"p1\", \"_context_user_id\": \"u1\"}"}"#;

    /// oslo.messaging 18.3.1 `call`, captured (oslo-wire-vectors.md); Nova-style args.
    const OSLO_CALL: &str = r#"{"oslo.version": "2.0", "oslo.message": "{\"method\": \"snapshot_instance\", \"args\": {\"instance_uuid\": \"6f1c2e0a-1111-4a2b-9c3d-000000000001\"}, \"version\": \"1.0\", \"_msg_id\": \"ce820b81ad344cf494161f9ed9f9fb46\", \"_reply_q\": \"reply_a1e5e719f5c14657bd26c0f25b796d27\", \"_timeout\": null, \"_unique_id\": \"d36aff8ce3554fee9c592d253ba4d7c1\", \"_context_request_id\": \"req-check-0001\", \"_context_project_id\": \"p1\", \"_context_user_id\": \"u1\"}"}"#;

    /// [`OSLO_CAST`] byte for byte, but with snapq's args.
    const SNAPQ_CAST: &str = r#"{"oslo.version": "2.0", "oslo.message": "{\"method\": \"snapshot_instance\", \"args\": {\"disk\": \"vms/6f1c2e0a-1111-4a2b-9c3d-000000000001_disk\", \"image_id\": \"0b5e7f3c-2222-4d5e-8f90-000000000002\", \"image_name\": \"web-1 nightly\"}, \"_unique_id\": \"53e413643f1445e4a93b284bb4bf83cb\", \"_context_request_id\": \"req-check-0001\", \"_context_project_id\": \"p1\", \"_context_user_id\": \"u1\"}"}"#;

    /// [`OSLO_CALL`] byte for byte, but with snapq's args.
    const SNAPQ_CALL: &str = r#"{"oslo.version": "2.0", "oslo.message": "{\"method\": \"snapshot_instance\", \"args\": {\"disk\": \"vms/6f1c2e0a-1111-4a2b-9c3d-000000000001_disk\", \"image_id\": \"0b5e7f3c-2222-4d5e-8f90-000000000002\", \"image_name\": \"web-1 nightly\", \"mode\": \"flatten\"}, \"version\": \"1.0\", \"_msg_id\": \"ce820b81ad344cf494161f9ed9f9fb46\", \"_reply_q\": \"reply_a1e5e719f5c14657bd26c0f25b796d27\", \"_timeout\": null, \"_unique_id\": \"d36aff8ce3554fee9c592d253ba4d7c1\", \"_context_request_id\": \"req-check-0001\", \"_context_project_id\": \"p1\", \"_context_user_id\": \"u1\"}"}"#;

    /// The inner dict of [`SNAPQ_CALL`], for building malformed variants.
    fn valid_inner() -> Map<String, Value> {
        let outer: Value = serde_json::from_str(SNAPQ_CALL).unwrap();
        serde_json::from_str(outer["oslo.message"].as_str().unwrap()).unwrap()
    }

    /// [`SNAPQ_CALL`] with `change` applied to its inner dict.
    fn call_with(change: impl FnOnce(&mut Map<String, Value>)) -> Vec<u8> {
        let mut inner = valid_inner();
        change(&mut inner);
        envelope::encode(&inner)
    }

    fn args_mut(inner: &mut Map<String, Value>) -> &mut Map<String, Value> {
        inner.get_mut("args").unwrap().as_object_mut().unwrap()
    }

    fn decode_err(body: &[u8]) -> MessageError {
        match SnapshotRequest::decode(body) {
            Ok(request) => panic!("decoded a malformed body: {request:?}"),
            Err(err) => err,
        }
    }

    #[test]
    fn captured_oslo_cast_decodes_up_to_its_nova_args() {
        let err = decode_err(OSLO_CAST.as_bytes());
        assert!(
            matches!(&err, MessageError::InvalidField { field, .. } if field == "args.instance_uuid"),
            "{err:?}"
        );
        assert!(err
            .to_string()
            .starts_with("invalid args.instance_uuid: unknown argument"));
    }

    #[test]
    fn captured_oslo_call_decodes_up_to_its_nova_args() {
        let err = decode_err(OSLO_CALL.as_bytes());
        assert_eq!(err.field(), Some("args.instance_uuid"), "{err}");
    }

    #[test]
    fn decodes_oslo_cast_with_snapq_args() {
        let request = SnapshotRequest::decode(SNAPQ_CAST.as_bytes()).unwrap();
        assert_eq!(request.disk.pool, "vms");
        assert_eq!(
            request.disk.image,
            "6f1c2e0a-1111-4a2b-9c3d-000000000001_disk"
        );
        assert_eq!(
            request.image_id,
            Uuid::parse_str("0b5e7f3c-2222-4d5e-8f90-000000000002").unwrap()
        );
        assert_eq!(request.image_name, "web-1 nightly");
        assert_eq!(request.mode, SnapshotMode::Flatten);
        assert_eq!(request.unique_id, "53e413643f1445e4a93b284bb4bf83cb");
        assert_eq!(request.reply, None);
        assert_eq!(request.context.request_id(), Some("req-check-0001"));
        assert_eq!(request.context.get("project_id"), Some(&json!("p1")));
        assert_eq!(request.context.get("user_id"), Some(&json!("u1")));
        assert_eq!(request.context.len(), 3);
    }

    #[test]
    fn decodes_oslo_call_with_snapq_args_and_reply_address() {
        let request = SnapshotRequest::decode(SNAPQ_CALL.as_bytes()).unwrap();
        assert_eq!(request.unique_id, "d36aff8ce3554fee9c592d253ba4d7c1");
        assert_eq!(request.context.request_id(), Some("req-check-0001"));
        assert_eq!(
            request.reply,
            Some(ReplyTo {
                msg_id: "ce820b81ad344cf494161f9ed9f9fb46".to_owned(),
                reply_queue: "reply_a1e5e719f5c14657bd26c0f25b796d27".to_owned(),
            })
        );
        // `_timeout` is a driver key, not context.
        assert_eq!(request.context.len(), 3);
    }

    #[test]
    fn encode_then_decode_round_trips_cast_and_call() {
        let disk = DiskSpec::new("vms", "6f1c2e0a-1111-4a2b-9c3d-000000000001_disk").unwrap();
        let mut request = SnapshotRequest::new(disk, Uuid::new_v4(), "web-1 \"nightly\" é".into());
        request.context.insert("auth_token", json!("secret-token"));
        request.context.insert("roles", json!(["member", "reader"]));
        assert_eq!(SnapshotRequest::decode(&request.encode()).unwrap(), request);

        request.reply = Some(ReplyTo {
            msg_id: envelope::new_unique_id(),
            reply_queue: format!("reply_{}", envelope::new_unique_id()),
        });
        assert_eq!(SnapshotRequest::decode(&request.encode()).unwrap(), request);
    }

    #[test]
    fn encode_writes_oslo_inner_dict() {
        let disk = DiskSpec::new("vms", "abc_disk").unwrap();
        let image_id = Uuid::parse_str("0b5e7f3c-2222-4d5e-8f90-000000000002").unwrap();
        let mut request = SnapshotRequest::new(disk, image_id, "snap".into());
        request.reply = Some(ReplyTo {
            msg_id: "ce820b81ad344cf494161f9ed9f9fb46".into(),
            reply_queue: "reply_a1e5e719f5c14657bd26c0f25b796d27".into(),
        });
        let outer: Value = serde_json::from_slice(&request.encode()).unwrap();
        assert_eq!(outer.as_object().unwrap().len(), 2);
        assert_eq!(outer["oslo.version"], "2.0");
        let text = outer["oslo.message"].as_str().unwrap();
        assert!(
            text.starts_with(r#"{"method":"snapshot_instance","args":{"disk":"#),
            "{text}"
        );
        let inner: Value = serde_json::from_str(text).unwrap();
        let request_id = request.context.request_id().unwrap();
        assert_eq!(
            inner,
            json!({
                "method": "snapshot_instance",
                "args": {
                    "disk": "vms/abc_disk",
                    "image_id": "0b5e7f3c-2222-4d5e-8f90-000000000002",
                    "image_name": "snap",
                    "mode": "flatten",
                },
                "version": "1.0",
                "_msg_id": "ce820b81ad344cf494161f9ed9f9fb46",
                "_reply_q": "reply_a1e5e719f5c14657bd26c0f25b796d27",
                "_timeout": null,
                "_unique_id": request.unique_id,
                "_context_request_id": request_id,
            })
        );
    }

    #[test]
    fn cast_has_no_reply_keys() {
        let request = SnapshotRequest::new(
            DiskSpec::new("vms", "abc_disk").unwrap(),
            Uuid::new_v4(),
            "snap".into(),
        );
        let inner = envelope::decode(&request.encode()).unwrap();
        for key in ["_msg_id", "_reply_q", "_timeout"] {
            assert!(!inner.contains_key(key), "{key}");
        }
        assert_eq!(request.unique_id.len(), 32);
    }

    fn with_key(key: &str, value: Value) -> Vec<u8> {
        call_with(|inner| {
            inner.insert(key.to_owned(), value);
        })
    }

    fn without_key(key: &str) -> Vec<u8> {
        call_with(|inner| {
            inner.remove(key);
        })
    }

    fn with_arg(key: &str, value: Value) -> Vec<u8> {
        call_with(|inner| {
            args_mut(inner).insert(key.to_owned(), value);
        })
    }

    fn without_arg(key: &str) -> Vec<u8> {
        call_with(|inner| {
            args_mut(inner).remove(key);
        })
    }

    #[test]
    fn malformed_bodies_are_rejected_naming_the_field() {
        let version_1_0 = SNAPQ_CALL.replacen(r#""2.0""#, r#""1.0""#, 1);
        let message_not_string = json!({"oslo.version": "2.0", "oslo.message": valid_inner()});
        let long_name = json!("n".repeat(256));
        let braced_id = json!(format!("{{{}}}", Uuid::new_v4()));
        let newline_request_id = with_key("_context_request_id", json!("req-1\nforged log line"));
        #[rustfmt::skip]
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("bad JSON", br#"{"oslo.version": "2.0", "oslo.mess"#.to_vec(), "message body"),
            ("missing oslo.message", br#"{"oslo.version": "2.0"}"#.to_vec(), "oslo.message"),
            ("oslo.version 1.0", version_1_0.into_bytes(), "oslo.version"),
            ("un-enveloped body", br#"{"method": "snapshot_instance"}"#.to_vec(), "oslo.version"),
            ("oslo.message not a string", message_not_string.to_string().into(), "oslo.message"),
            ("unknown method", with_key("method", json!("reboot_instance")), "method"),
            ("missing method", without_key("method"), "method"),
            ("args not an object", with_key("args", json!(["vms/x"])), "args"),
            ("missing args", without_key("args"), "args"),
            ("missing args.disk", without_arg("disk"), "args.disk"),
            ("disk without slash", with_arg("disk", json!("vms_abc")), "args.disk"),
            ("disk with @", with_arg("disk", json!("vms/abc@snap")), "args.disk"),
            ("disk with control char", with_arg("disk", json!("vms/a\u{1b}c")), "args.disk"),
            ("disk not a string", with_arg("disk", json!({"pool": "vms"})), "args.disk"),
            ("too-long image name", with_arg("image_name", long_name), "args.image_name"),
            ("empty image name", with_arg("image_name", json!("")), "args.image_name"),
            ("missing image name", without_arg("image_name"), "args.image_name"),
            ("image_id not a UUID", with_arg("image_id", json!("0b5e7f3c-2222")), "args.image_id"),
            ("braced image_id", with_arg("image_id", braced_id), "args.image_id"),
            ("nil image_id", with_arg("image_id", json!(Uuid::nil())), "args.image_id"),
            ("unknown mode", with_arg("mode", json!("copy")), "args.mode"),
            ("unknown args key", with_arg("foo", json!(1)), "args.foo"),
            ("unknown top-level key", with_key("kwargs", json!({})), "kwargs"),
            ("namespace", with_key("namespace", json!("compute")), "namespace"),
            ("newer API version", with_key("version", json!("1.1")), "version"),
            ("other major version", with_key("version", json!("2.0")), "version"),
            ("malformed version", with_key("version", json!("1.x")), "version"),
            ("missing _unique_id", without_key("_unique_id"), "_unique_id"),
            ("_msg_id without _reply_q", without_key("_reply_q"), "_reply_q"),
            ("_reply_q without _msg_id", without_key("_msg_id"), "_msg_id"),
            ("_reply_q with space", with_key("_reply_q", json!("reply_a b")), "_reply_q"),
            ("request id with newline", newline_request_id, "_context_request_id"),
        ];
        for (name, body, field) in cases {
            let err = decode_err(&body);
            assert!(
                err.to_string().contains(field),
                "{name}: \"{err}\" does not name {field}"
            );
            if let Some(named) = err.field() {
                assert_eq!(named, field, "{name}: {err}");
            }
        }
    }

    #[test]
    fn oversize_body_is_rejected_before_parsing() {
        let mut body = SNAPQ_CALL.as_bytes().to_vec();
        body.resize(MAX_MESSAGE_BYTES + 1, b' ');
        assert!(matches!(
            decode_err(&body),
            MessageError::TooLarge { size, limit: MAX_MESSAGE_BYTES } if size == MAX_MESSAGE_BYTES + 1
        ));
        // Trailing whitespace is valid JSON: the same body at the limit decodes.
        body.truncate(MAX_MESSAGE_BYTES);
        assert!(SnapshotRequest::decode(&body).is_ok());
    }

    #[test]
    fn duplicate_args_are_rejected() {
        let body = SNAPQ_CAST.replacen(
            r#"\"image_name\": \"web-1 nightly\"}"#,
            r#"\"image_name\": \"web-1 nightly\", \"disk\": \"vms/other_disk\"}"#,
            1,
        );
        assert_ne!(body, SNAPQ_CAST);
        assert!(matches!(
            decode_err(body.as_bytes()),
            MessageError::NotJson { .. }
        ));
    }

    #[test]
    fn accepted_variations_decode() {
        let simple_id = json!("0b5e7f3c22224d5e8f90000000000002");
        assert!(SnapshotRequest::decode(&with_arg("image_id", simple_id)).is_ok());
        let null_mode = SnapshotRequest::decode(&with_arg("mode", Value::Null)).unwrap();
        assert_eq!(null_mode.mode, SnapshotMode::Flatten);
        assert!(SnapshotRequest::decode(&without_arg("mode")).is_ok());
        assert!(SnapshotRequest::decode(&without_key("version")).is_ok());
        assert!(SnapshotRequest::decode(&with_key("_future_oslo_key", json!(1))).is_ok());
        assert!(SnapshotRequest::decode(&with_key("namespace", Value::Null)).is_ok());
        for (version, ok) in [
            ("1.0", true),
            ("1.0.0", true),
            ("1", false),
            ("1.0.1", false),
        ] {
            let decoded = SnapshotRequest::decode(&with_key("version", json!(version)));
            assert_eq!(decoded.is_ok(), ok, "{version}");
        }
    }

    #[test]
    fn api_version_constants_agree() {
        assert_eq!(parse_version(RPC_API_VERSION), Some(API_VERSION));
    }

    /// xorshift64: deterministic, no dependencies.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Applies one to four random edits: overwrite, insert, delete, duplicate or truncate.
    fn mutate(rng: &mut XorShift, mut bytes: Vec<u8>) -> Vec<u8> {
        const INTERESTING: &[u8] = b"{}[]\":,\\/@ .0-9eEu\x00\x1f\x7f\xc3\xff";
        for _ in 0..=rng.below(4) {
            let at = rng.below(bytes.len() + 1);
            let byte = if rng.below(2) == 0 {
                INTERESTING[rng.below(INTERESTING.len())]
            } else {
                rng.next() as u8
            };
            match rng.below(5) {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                2 if at < bytes.len() => {
                    let end = (at + 1 + rng.below(8)).min(bytes.len());
                    bytes.drain(at..end);
                }
                3 => {
                    let end = (at + 1 + rng.below(16)).min(bytes.len());
                    let copy = bytes[at..end].to_vec();
                    bytes.splice(at..at, copy);
                }
                _ => bytes.truncate(at),
            }
        }
        bytes
    }

    /// Whatever decodes must encode to something that decodes to the same request.
    fn check_decode(body: &[u8]) -> bool {
        match SnapshotRequest::decode(body) {
            Ok(request) => {
                assert_eq!(SnapshotRequest::decode(&request.encode()).unwrap(), request);
                true
            }
            Err(_) => false,
        }
    }

    #[test]
    fn decode_never_panics_on_mutated_bodies() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let inner_text = serde_json::to_string(&valid_inner()).unwrap();
        let mut decoded = 0;
        for i in 0..20_000 {
            let body = if i % 2 == 0 {
                // Mutate the envelope bytes directly.
                mutate(&mut rng, SNAPQ_CALL.as_bytes().to_vec())
            } else {
                // Mutate the inner dict and re-envelope it, to reach the field checks.
                let inner = mutate(&mut rng, inner_text.clone().into_bytes());
                let inner = String::from_utf8_lossy(&inner);
                serde_json::to_vec(&json!({"oslo.version": "2.0", "oslo.message": inner})).unwrap()
            };
            if check_decode(&body) {
                decoded += 1;
            }
        }
        // Some mutations (e.g. inside the image name) must stay valid, or the test proves little.
        assert!(decoded > 100, "only {decoded} mutated bodies decoded");
    }
}
