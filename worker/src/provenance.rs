//! Marks on what snapq makes, so that it adopts and removes only its own artefacts.
//!
//! - The snapshots of an instance disk carry their mark in their name:
//!   `<disk>@snapq-<image_id>` (fast path) and `<disk>@snapq-fallback-<image_id>` (full copy)
//!   name both the job's image and, by where they are, its source disk.
//! - The clone `images/<image_id>` carries the RBD image metadata key [`MARK_KEY`], holding
//!   the image id and the source disk it was made from (`rbd image-meta get images/<id>
//!   snapq.made-for`). It is set right after the clone is made, in the same step; until then
//!   the clone's parent link to the marked source snapshot is its mark (a crash in between is
//!   repaired on resume).
//!
//! Anything found under snapq's names without a matching mark is somebody else's: a step that
//! finds it refuses the job and cleanup leaves it alone.

use serde::{Deserialize, Serialize};
use snapq_common::rbd::{Pool, RbdError};
use uuid::Uuid;

use crate::error::Refusal;
use crate::names::ArtifactNames;

/// The image metadata key of snapq's mark on a clone.
pub const MARK_KEY: &str = "snapq.made-for";

/// What a clone was made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub image_id: Uuid,
    /// `pool/image` of the instance disk.
    pub source: String,
}

impl Mark {
    pub fn for_job(names: &ArtifactNames, image_id: Uuid) -> Mark {
        Mark {
            image_id,
            source: names.source.to_string(),
        }
    }

    fn encode(&self) -> String {
        serde_json::json!({"image_id": self.image_id, "source": self.source}).to_string()
    }
}

/// Who `images/<image_id>` belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloneOwner {
    /// There is no such image.
    Absent,
    /// snapq made it for this job (same image id, same source disk).
    ThisJob,
    /// snapq made it for this job but had not marked it yet: it is still a clone of this job's
    /// source snapshot and carries no mark.
    ThisJobUnmarked,
    /// snapq made it for another source disk.
    OtherJob { made_for: String },
    /// Not made by snapq: no mark (or an unreadable one), and not a clone of this job's
    /// snapshot. `found` says what it is.
    NotOurs { found: String },
}

impl CloneOwner {
    /// Ok for this job's own clone (or none); otherwise the refusal that says what was found.
    pub fn require_this_job(&self, names: &ArtifactNames) -> Result<(), Refusal> {
        match self {
            CloneOwner::Absent | CloneOwner::ThisJob | CloneOwner::ThisJobUnmarked => Ok(()),
            CloneOwner::OtherJob { made_for } => Err(Refusal::OtherJob {
                image: names.image_spec(),
                made_for: made_for.clone(),
                wanted: names.source.to_string(),
            }),
            CloneOwner::NotOurs { found } => Err(Refusal::Unmarked {
                image: names.image_spec(),
                found: found.clone(),
            }),
        }
    }

    pub fn is_this_job(&self) -> bool {
        matches!(self, CloneOwner::ThisJob | CloneOwner::ThisJobUnmarked)
    }
}

/// Looks at `images/<image_id>` and says whose it is. Blocking.
pub fn inspect_clone(
    image_pool: &Pool,
    names: &ArtifactNames,
    image_id: Uuid,
) -> Result<CloneOwner, RbdError> {
    let image = match image_pool.open_read_only(&names.image, None) {
        Ok(image) => image,
        Err(e) if e.is_not_found() => return Ok(CloneOwner::Absent),
        Err(e) => return Err(e),
    };
    let wanted = Mark::for_job(names, image_id);
    if let Some(raw) = image.metadata(MARK_KEY)? {
        return Ok(match serde_json::from_str::<Mark>(&raw) {
            Ok(mark) if mark == wanted => CloneOwner::ThisJob,
            Ok(mark) if mark.image_id == image_id => CloneOwner::OtherJob {
                made_for: mark.source,
            },
            Ok(mark) => CloneOwner::NotOurs {
                found: format!("a snapq mark for another image, {}", mark.image_id),
            },
            Err(_) => CloneOwner::NotOurs {
                found: format!("an unreadable {MARK_KEY} value"),
            },
        });
    }
    Ok(match image.parent()? {
        Some(p)
            if p.pool == names.source.pool
                && p.image == names.source.image
                && p.snap == names.source_snapshot =>
        {
            CloneOwner::ThisJobUnmarked
        }
        Some(p) => CloneOwner::NotOurs {
            found: format!("a clone of {}/{}@{}", p.pool, p.image, p.snap),
        },
        None => CloneOwner::NotOurs {
            found: "an independent image".to_string(),
        },
    })
}

/// Marks `images/<image_id>` as this job's. Blocking.
pub fn mark_clone(
    image_pool: &Pool,
    names: &ArtifactNames,
    image_id: Uuid,
) -> Result<(), RbdError> {
    let mut image = image_pool.open(&names.image)?;
    image.set_metadata(MARK_KEY, &Mark::for_job(names, image_id).encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_round_trips_through_its_metadata_value() {
        let mark = Mark {
            image_id: Uuid::parse_str("0b5e7f3c-2222-4d5e-8f90-000000000002").expect("uuid"),
            source: "vms/6f1c2e0a-1111-4a2b-9c3d-000000000001_disk".into(),
        };
        let decoded: Mark = serde_json::from_str(&mark.encode()).expect("decodes");
        assert_eq!(decoded, mark);
    }
}
