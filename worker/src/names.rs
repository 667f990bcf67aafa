//! Names of every RBD artefact a job creates, derived only from the request, so a retry, a
//! second worker or the cleanup finds exactly what an earlier attempt left.

use snapq_common::message::{DiskSpec, SnapshotRequest};
use uuid::Uuid;

/// Prefix of the temporary snapshot snapq takes of an instance disk.
pub const SOURCE_SNAPSHOT_PREFIX: &str = "snapq-";
/// The snapshot Glance's rbd store expects on an image (glance_store creates the same).
pub const IMAGE_SNAPSHOT: &str = "snap";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactNames {
    /// The instance disk, `vms/<uuid>_disk`.
    pub source: DiskSpec,
    /// Snapshot of the instance disk: `vms/<uuid>_disk@snapq-<image_id>`.
    pub source_snapshot: String,
    /// Glance's pool, `images`.
    pub image_pool: String,
    /// The clone in Glance's pool, named after the Glance image: `images/<image_id>`.
    pub image: String,
}

impl ArtifactNames {
    pub fn for_request(request: &SnapshotRequest, image_pool: &str) -> ArtifactNames {
        ArtifactNames::new(&request.disk, request.image_id, image_pool)
    }

    pub fn new(source: &DiskSpec, image_id: Uuid, image_pool: &str) -> ArtifactNames {
        ArtifactNames {
            source: source.clone(),
            source_snapshot: format!("{SOURCE_SNAPSHOT_PREFIX}{image_id}"),
            image_pool: image_pool.to_string(),
            image: image_id.to_string(),
        }
    }

    /// The location Glance records: `rbd://<fsid>/<pool>/<image>/snap`.
    pub fn location(&self, fsid: &str) -> String {
        format!(
            "rbd://{fsid}/{}/{}/{IMAGE_SNAPSHOT}",
            self.image_pool, self.image
        )
    }

    pub fn source_snapshot_spec(&self) -> String {
        format!("{}@{}", self.source, self.source_snapshot)
    }

    pub fn image_spec(&self) -> String {
        format!("{}/{}", self.image_pool, self.image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_depend_only_on_the_request() {
        let disk = DiskSpec::parse("args.disk", "vms/6f1c2e0a-1111-4a2b-9c3d-000000000001_disk")
            .expect("valid disk");
        let id = Uuid::parse_str("0b5e7f3c-2222-4d5e-8f90-000000000002").expect("uuid");
        let a = ArtifactNames::new(&disk, id, "images");
        assert_eq!(a, ArtifactNames::new(&disk, id, "images"));
        assert_eq!(
            a.source_snapshot_spec(),
            "vms/6f1c2e0a-1111-4a2b-9c3d-000000000001_disk@snapq-0b5e7f3c-2222-4d5e-8f90-000000000002"
        );
        assert_eq!(
            a.image_spec(),
            "images/0b5e7f3c-2222-4d5e-8f90-000000000002"
        );
        assert_eq!(
            a.location("fsid-1"),
            "rbd://fsid-1/images/0b5e7f3c-2222-4d5e-8f90-000000000002/snap"
        );
    }
}
