//! RBD pool and image names, and [`DiskSpec`], the `pool/image` a request names.

use std::fmt;

use super::MessageError;

/// Longest pool name accepted, in bytes.
pub const MAX_POOL_NAME_BYTES: usize = 64;

/// Longest image name accepted, in bytes (librbd's `RBD_MAX_IMAGE_NAME_SIZE`).
pub const MAX_IMAGE_NAME_BYTES: usize = 96;

/// Longest Glance image name accepted, in characters (Glance's own limit).
pub const MAX_GLANCE_IMAGE_NAME_CHARS: usize = 255;

/// The RBD image to snapshot, as `pool/image` (e.g. `vms/6f1c2e0a-..._disk`).
///
/// Built only through [`DiskSpec::parse`] or [`DiskSpec::new`], which validate both names; it
/// serializes as the `pool/image` string and deserializes through the same validation. RBD
/// namespaces (`pool/namespace/image`) and snapshot names (`image@snap`) are not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DiskSpec {
    pub pool: String,
    pub image: String,
}

impl DiskSpec {
    /// Parses `pool/image`; errors name `field` (e.g. `args.disk`).
    pub fn parse(field: &'static str, s: &str) -> Result<DiskSpec, MessageError> {
        let Some((pool, image)) = s.split_once('/') else {
            return Err(MessageError::invalid(
                field,
                "expected \"pool/image\", found no '/'",
            ));
        };
        validate_pool_name(field, pool)?;
        validate_image_name(field, image)?;
        Ok(DiskSpec {
            pool: pool.to_owned(),
            image: image.to_owned(),
        })
    }

    /// Builds a spec from its two names, validating both.
    pub fn new(
        pool: impl Into<String>,
        image: impl Into<String>,
    ) -> Result<DiskSpec, MessageError> {
        let (pool, image) = (pool.into(), image.into());
        validate_pool_name("disk.pool", &pool)?;
        validate_image_name("disk.image", &image)?;
        Ok(DiskSpec { pool, image })
    }
}

impl fmt::Display for DiskSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.pool, self.image)
    }
}

impl TryFrom<String> for DiskSpec {
    type Error = MessageError;

    fn try_from(s: String) -> Result<DiskSpec, MessageError> {
        DiskSpec::parse("disk", &s)
    }
}

impl From<DiskSpec> for String {
    fn from(disk: DiskSpec) -> String {
        disk.to_string()
    }
}

/// Checks an RBD pool name: 1..=64 bytes, none of `/`, `@`, whitespace or control characters,
/// not `.` or `..`. Errors name `field`.
pub fn validate_pool_name(field: &'static str, s: &str) -> Result<(), MessageError> {
    validate_rbd_name(field, "pool", s, MAX_POOL_NAME_BYTES)
}

/// Checks an RBD image name: 1..=96 bytes, none of `/`, `@`, whitespace or control characters,
/// not `.` or `..`. Errors name `field`.
pub fn validate_image_name(field: &'static str, s: &str) -> Result<(), MessageError> {
    validate_rbd_name(field, "image", s, MAX_IMAGE_NAME_BYTES)
}

/// Checks the name the new Glance image gets: 1..=255 characters, no control characters.
/// Errors name `field`.
pub fn validate_glance_image_name(field: &'static str, s: &str) -> Result<(), MessageError> {
    let chars = s.chars().count();
    let reason = if chars == 0 {
        "image name is empty".to_owned()
    } else if chars > MAX_GLANCE_IMAGE_NAME_CHARS {
        format!("image name is {chars} characters, over the limit of {MAX_GLANCE_IMAGE_NAME_CHARS}")
    } else if let Some(c) = s.chars().find(|c| c.is_control()) {
        format!("image name must not contain {}", describe_char(c))
    } else {
        return Ok(());
    };
    Err(MessageError::invalid(field, reason))
}

fn validate_rbd_name(
    field: &'static str,
    kind: &str,
    s: &str,
    max_bytes: usize,
) -> Result<(), MessageError> {
    let reason = if s.is_empty() {
        format!("{kind} name is empty")
    } else if s.len() > max_bytes {
        format!(
            "{kind} name is {} bytes, over the limit of {max_bytes}",
            s.len()
        )
    } else if s == "." || s == ".." {
        format!("{kind} name must not be {s:?}")
    } else if let Some(c) = s.chars().find(|&c| is_forbidden_in_name(c)) {
        format!("{kind} name must not contain {}", describe_char(c))
    } else {
        return Ok(());
    };
    Err(MessageError::InvalidField {
        field: field.to_owned(),
        reason,
    })
}

/// A character as `'@'` if it is visible ASCII, else as `U+000A`, so that no control or
/// whitespace character reaches an error message (and the logs) raw.
pub(super) fn describe_char(c: char) -> String {
    if c.is_ascii_graphic() {
        format!("'{c}'")
    } else {
        format!("U+{:04X}", u32::from(c))
    }
}

/// `/` separates pool, namespace and image in rbd specs, and `@` introduces a snapshot name.
fn is_forbidden_in_name(c: char) -> bool {
    c == '/' || c == '@' || c.is_control() || c.is_whitespace()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(result: Result<impl fmt::Debug, MessageError>) -> String {
        match result {
            Err(MessageError::InvalidField { field, reason }) => format!("{field}: {reason}"),
            other => panic!("expected InvalidField, got {other:?}"),
        }
    }

    #[test]
    fn parses_nova_style_disk() {
        let disk =
            DiskSpec::parse("args.disk", "vms/6f1c2e0a-1111-4a2b-9c3d-000000000001_disk").unwrap();
        assert_eq!(disk.pool, "vms");
        assert_eq!(disk.image, "6f1c2e0a-1111-4a2b-9c3d-000000000001_disk");
        assert_eq!(
            disk.to_string(),
            "vms/6f1c2e0a-1111-4a2b-9c3d-000000000001_disk"
        );
    }

    #[test]
    fn rejects_malformed_disks_naming_the_field() {
        for (input, expected) in [
            ("vms", "args.disk: expected \"pool/image\", found no '/'"),
            ("/img", "args.disk: pool name is empty"),
            ("vms/", "args.disk: image name is empty"),
            ("vms/ns/img", "args.disk: image name must not contain '/'"),
            ("vms/img@snap", "args.disk: image name must not contain '@'"),
            ("vm@s/img", "args.disk: pool name must not contain '@'"),
            ("vms/im\ng", "args.disk: image name must not contain U+000A"),
            (
                "vms/im\u{7f}g",
                "args.disk: image name must not contain U+007F",
            ),
            ("vms/im g", "args.disk: image name must not contain U+0020"),
            (
                "vms/im\u{a0}g",
                "args.disk: image name must not contain U+00A0",
            ),
            ("./img", "args.disk: pool name must not be \".\""),
            ("vms/..", "args.disk: image name must not be \"..\""),
        ] {
            assert_eq!(
                reason(DiskSpec::parse("args.disk", input)),
                expected,
                "{input:?}"
            );
        }
    }

    #[test]
    fn enforces_name_length_limits_in_bytes() {
        let pool = "p".repeat(MAX_POOL_NAME_BYTES);
        let image = "i".repeat(MAX_IMAGE_NAME_BYTES);
        assert!(DiskSpec::new(pool.clone(), image.clone()).is_ok());
        assert_eq!(
            reason(DiskSpec::new(format!("{pool}p"), image.clone())),
            "disk.pool: pool name is 65 bytes, over the limit of 64"
        );
        assert_eq!(
            reason(DiskSpec::new(pool, format!("{image}i"))),
            "disk.image: image name is 97 bytes, over the limit of 96"
        );
        // 48 two-byte characters are 96 bytes: allowed; one more is not.
        assert!(validate_image_name("x", &"é".repeat(48)).is_ok());
        assert!(validate_image_name("x", &"é".repeat(49)).is_err());
    }

    #[test]
    fn glance_image_names_allow_spaces_but_not_control_characters() {
        assert!(validate_glance_image_name("n", "nightly snapshot of web-1 (é)").is_ok());
        assert!(validate_glance_image_name("n", &"x".repeat(255)).is_ok());
        assert_eq!(
            reason(validate_glance_image_name("n", &"x".repeat(256))),
            "n: image name is 256 characters, over the limit of 255"
        );
        assert_eq!(
            reason(validate_glance_image_name("n", "")),
            "n: image name is empty"
        );
        assert_eq!(
            reason(validate_glance_image_name("n", "a\tb")),
            "n: image name must not contain U+0009"
        );
    }

    #[test]
    fn serializes_as_pool_slash_image_string() {
        let disk = DiskSpec::new("vms", "abc_disk").unwrap();
        let json = serde_json::to_string(&disk).unwrap();
        assert_eq!(json, "\"vms/abc_disk\"");
        assert_eq!(serde_json::from_str::<DiskSpec>(&json).unwrap(), disk);
        let err = serde_json::from_str::<DiskSpec>("\"vms/a@b\"").unwrap_err();
        assert!(err.to_string().contains("invalid disk"), "{err}");
    }
}
