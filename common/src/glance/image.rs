//! Glance image records: what we send to create one and what Glance reports back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Body of `POST /v2/images`.
#[derive(Debug, Clone, Serialize)]
pub struct NewImage {
    /// Chosen by the caller so that a retried create finds the image it already made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    pub name: String,
    pub disk_format: String,
    pub container_format: String,
    /// Custom image properties, sent as top-level fields.
    #[serde(flatten)]
    pub extra: BTreeMap<String, String>,
}

impl NewImage {
    /// A `raw`/`bare` image (what an RBD disk is) with a Glance-chosen id and no properties.
    pub fn raw(name: impl Into<String>) -> NewImage {
        NewImage {
            id: None,
            name: name.into(),
            disk_format: "raw".to_string(),
            container_format: "bare".to_string(),
            extra: BTreeMap::new(),
        }
    }
}

/// The parts of Glance's image document snapq reads; other fields are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageRecord {
    pub id: Uuid,
    pub name: Option<String>,
    pub status: String,
    pub size: Option<u64>,
    pub virtual_size: Option<u64>,
    pub disk_format: Option<String>,
    /// MD5 of the data (legacy).
    pub checksum: Option<String>,
    /// Set after Glance has hashed the data; for a location image that happens in the
    /// background, some time after the image became `active`.
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
    /// Where the data lives, e.g. `rbd://<fsid>/images/<id>/snap` (if `show_image_direct_url`).
    pub direct_url: Option<String>,
    /// The project that owns the image.
    #[serde(default)]
    pub owner: Option<String>,
    /// The task holding the image's import lock (a location import in progress), if any.
    #[serde(default)]
    pub os_glance_import_task: Option<String>,
    /// The image's locations, when Glance shows them (`show_multiple_locations`).
    #[serde(default)]
    pub locations: Option<Vec<ImageLocation>>,
}

/// A Glance task (`GET /v2/tasks/{id}`): for a location import, `status` is `pending`,
/// `processing`, `success` or `failure`, and `message` says why it failed.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskRecord {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub message: Option<String>,
    /// When Glance queued the task, as Glance writes it (`2026-12-01T11:27:30Z`).
    #[serde(default)]
    pub created_at: Option<String>,
    /// When the task last changed.
    #[serde(default)]
    pub updated_at: Option<String>,
}

impl TaskRecord {
    pub fn failed(&self) -> bool {
        self.status == "failure"
    }

    /// Whether the task has ended, one way or the other.
    pub fn ended(&self) -> bool {
        matches!(self.status.as_str(), "success" | "failure")
    }

    /// Whether Glance has started running the task (it is past `pending`).
    pub fn started(&self) -> bool {
        self.status != "pending"
    }

    pub fn created(&self) -> Option<std::time::SystemTime> {
        self.created_at.as_deref().and_then(glance_time)
    }

    pub fn updated(&self) -> Option<std::time::SystemTime> {
        self.updated_at.as_deref().and_then(glance_time)
    }
}

/// What Glance says about a task id.
#[derive(Debug, Clone)]
pub enum TaskLookup {
    Found(TaskRecord),
    /// Glance has no such task (`404`).
    Missing,
    /// This user may not read tasks (`401`/`403`: the tasks API is admin-only by default).
    Hidden,
}

/// A Glance timestamp (RFC 3339, the zone sometimes left out: Glance's times are UTC).
fn glance_time(text: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339_weak(text.trim_end_matches('Z')).ok()
}

/// One entry of an image's `locations`.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageLocation {
    pub url: String,
}

impl ImageRecord {
    pub fn is_active(&self) -> bool {
        self.status == "active"
    }

    /// Every location Glance shows for the image: `direct_url` and `locations`, without
    /// repeats. Empty either when the image has none or when Glance hides them.
    pub fn known_locations(&self) -> Vec<&str> {
        let mut urls: Vec<&str> = self.direct_url.iter().map(String::as_str).collect();
        for location in self.locations.iter().flatten() {
            if !urls.contains(&location.url.as_str()) {
                urls.push(&location.url);
            }
        }
        urls
    }
}

/// Where an image's status leaves a waiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Progress {
    Active,
    /// May still become active: queued, saving, importing, uploading.
    Pending,
    /// Will not become active without someone's intervention.
    Failed,
}

pub(super) fn progress(status: &str) -> Progress {
    match status {
        "active" => Progress::Active,
        "queued" | "saving" | "importing" | "uploading" => Progress::Pending,
        // killed, deleted, pending_delete, deactivated, and anything newer we don't know.
        _ => Progress::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_image_flattens_properties_and_omits_missing_id() {
        let mut image = NewImage::raw("vm-disk");
        image
            .extra
            .insert("snapq_job".to_string(), "j1".to_string());
        let json = serde_json::to_value(&image).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "vm-disk", "disk_format": "raw",
                               "container_format": "bare", "snapq_job": "j1"})
        );
        image.id = Some(Uuid::nil());
        let json = serde_json::to_value(&image).unwrap();
        assert_eq!(json["id"], "00000000-0000-0000-0000-000000000000");
    }

    #[test]
    fn record_ignores_unknown_fields_and_nulls() {
        let record: ImageRecord = serde_json::from_str(
            r#"{"id": "4b02e12a-7712-44ae-81fc-b6b3d8bf6135", "name": "probe", "status": "queued",
                "size": null, "virtual_size": null, "checksum": null, "tags": [],
                "visibility": "shared", "os_hash_algo": null}"#,
        )
        .unwrap();
        assert_eq!(record.status, "queued");
        assert!(!record.is_active());
        assert_eq!(record.size, None);
        assert_eq!(record.direct_url, None);
    }

    #[test]
    fn statuses_map_to_progress() {
        assert_eq!(progress("active"), Progress::Active);
        assert_eq!(progress("queued"), Progress::Pending);
        assert_eq!(progress("importing"), Progress::Pending);
        assert_eq!(progress("killed"), Progress::Failed);
        assert_eq!(progress("deactivated"), Progress::Failed);
    }
}

#[cfg(test)]
mod task_tests {
    use super::*;
    use std::time::Duration;

    fn task(created: &str, updated: &str) -> TaskRecord {
        TaskRecord {
            id: "t".into(),
            status: "pending".into(),
            message: None,
            created_at: Some(created.into()),
            updated_at: Some(updated.into()),
        }
    }

    #[test]
    fn glance_timestamps_parse_with_and_without_a_zone_and_fractions() {
        let t = task("2026-12-01T11:27:30Z", "2026-12-01T11:28:00.250000");
        let (created, updated) = (t.created().expect("created"), t.updated().expect("updated"));
        assert_eq!(
            updated.duration_since(created).expect("later"),
            Duration::from_millis(30_250)
        );
        assert!(task("yesterday", "x").created().is_none());
    }
}
