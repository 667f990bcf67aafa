//! Registering data already in Glance's pool as an image's location, through the new location
//! API (Image API 2.17+) or the legacy `PATCH`, with the choice made once per client.

use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use uuid::Uuid;

use super::client::{decode, GlanceClient};
use super::error::GlanceError;
use super::location_api::LocationApi;

/// First Image API minor version with `POST /v2/images/{id}/locations`.
const NEW_API_MINOR: u32 = 17;

#[derive(Deserialize)]
struct Versions {
    versions: Vec<Version>,
}

#[derive(Deserialize)]
struct Version {
    id: String,
}

/// `v2.17` → `(2, 17)`.
fn parse_version(id: &str) -> Option<(u32, u32)> {
    let (major, minor) = id.strip_prefix('v')?.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Whether a version list (in any order: Glance's is not sorted) offers the new location API.
fn offers_new_api<'a>(ids: impl IntoIterator<Item = &'a str>) -> bool {
    ids.into_iter()
        .filter_map(parse_version)
        .any(|(major, minor)| major > 2 || (major == 2 && minor >= NEW_API_MINOR))
}

impl GlanceClient {
    /// Registers `url` (e.g. `rbd://<fsid>/images/<id>/snap`) as the data of the `queued`
    /// image `id` and returns the API used. With the new API the image becomes `active` only
    /// later, and only if Glance can open the location: call [`GlanceClient::wait_active`].
    pub async fn add_location(&self, id: Uuid, url: &str) -> Result<LocationApi, GlanceError> {
        match self.location_api().await? {
            LocationApi::Legacy => self.add_location_legacy(id, url).await,
            api => {
                let auto = self.inner_location_api() == LocationApi::Auto;
                match self.add_location_new(id, url).await {
                    Err(GlanceError::Http { status, .. })
                        if auto && matches!(status, 404 | 405 | 501) =>
                    {
                        // 404 may only mean the image is missing; the PATCH will say so again.
                        if status != 404 {
                            self.detected().set(LocationApi::Legacy);
                        }
                        tracing::debug!(%id, status, "new location API unavailable, using PATCH");
                        self.add_location_legacy(id, url).await
                    }
                    Err(GlanceError::Http { status: 404, .. }) => Err(GlanceError::NotFound { id }),
                    other => other.map(|()| api),
                }
            }
        }
    }

    /// The configured API, or for `Auto` the one the server offers (asked once).
    async fn location_api(&self) -> Result<LocationApi, GlanceError> {
        if self.inner_location_api() != LocationApi::Auto {
            return Ok(self.inner_location_api());
        }
        if let Some(api) = self.detected().get() {
            return Ok(api);
        }
        let path = "/versions";
        let reply = self.send(Method::GET, path, |r| r).await?;
        // Glance answers the version document with 200 here (300 on `/`).
        let reply = match reply.status {
            StatusCode::MULTIPLE_CHOICES => reply,
            _ => self.expect_success(&Method::GET, path, reply)?,
        };
        let versions: Versions = decode(path, &reply.body)?;
        let api = if offers_new_api(versions.versions.iter().map(|v| v.id.as_str())) {
            LocationApi::New
        } else {
            LocationApi::Legacy
        };
        tracing::debug!(?api, "glance location API detected");
        self.detected().set(api);
        Ok(api)
    }

    async fn add_location_new(&self, id: Uuid, url: &str) -> Result<(), GlanceError> {
        let path = format!("/v2/images/{id}/locations");
        // No validation_data: a wrong hash there makes Glance delete the RBD image.
        let body = serde_json::json!({ "url": url });
        let reply = self.send(Method::POST, &path, |r| r.json(&body)).await?;
        self.expect_success(&Method::POST, &path, reply)?;
        Ok(())
    }

    async fn add_location_legacy(&self, id: Uuid, url: &str) -> Result<LocationApi, GlanceError> {
        let path = format!("/v2/images/{id}");
        let patch = serde_json::json!([{
            "op": "add",
            "path": "/locations/-",
            "value": { "url": url, "metadata": {} },
        }]);
        let reply = self
            .send(Method::PATCH, &path, |r| {
                r.header(CONTENT_TYPE, "application/openstack-images-v2.1-json-patch")
                    .body(patch.to_string())
            })
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Err(GlanceError::NotFound { id });
        }
        self.expect_success(&Method::PATCH, &path, reply)?;
        Ok(LocationApi::Legacy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::glance::fake_server::{answering, config};
    use crate::glance::location_api::DetectedApi;

    #[test]
    fn detects_new_api_in_unsorted_version_list() {
        assert!(offers_new_api(["v2.15", "v2.13", "v2.17", "v2.7"]));
        assert!(offers_new_api(["v3.0"]));
        assert!(!offers_new_api(["v2.15", "v2.16", "v2.2", "v1.1"]));
        assert!(!offers_new_api(["garbage", "v2", "v2.x"]));
    }

    #[test]
    fn detected_api_starts_unknown_and_remembers() {
        let detected = DetectedApi::default();
        assert_eq!(detected.get(), None);
        detected.set(LocationApi::Legacy);
        assert_eq!(detected.get(), Some(LocationApi::Legacy));
    }

    const IMAGE: &str = r#"{"id": "00000000-0000-0000-0000-000000000000", "status": "active"}"#;

    #[tokio::test]
    async fn auto_uses_patch_when_versions_stop_before_2_17_and_remembers() {
        let versions = r#"{"versions": [{"id": "v2.16"}, {"id": "v2.15"}]}"#;
        let (url, server) = answering(vec![(200, versions), (200, IMAGE), (200, IMAGE)]);
        let client = GlanceClient::new(config(url, None, LocationApi::Auto)).unwrap();
        let used = client.add_location(Uuid::nil(), "rbd://f/p/i/snap").await;
        assert_eq!(used.unwrap(), LocationApi::Legacy);
        let again = client
            .clone()
            .add_location(Uuid::nil(), "rbd://f/p/i/snap")
            .await;
        assert_eq!(again.unwrap(), LocationApi::Legacy, "versions asked once");
        let seen = server.join().unwrap();
        assert!(seen[0].0.starts_with("get /versions "));
        for (head, body) in &seen[1..] {
            assert!(head.starts_with("patch /v2/images/"), "{head}");
            assert!(
                head.contains("content-type: application/openstack-images-v2.1-json-patch"),
                "{head}"
            );
            let patch: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(
                patch,
                serde_json::json!([{"op": "add", "path": "/locations/-",
                    "value": {"url": "rbd://f/p/i/snap", "metadata": {}}}])
            );
        }
    }

    #[tokio::test]
    async fn auto_falls_back_to_patch_when_post_is_not_allowed() {
        let versions = r#"{"versions": [{"id": "v2.17"}]}"#;
        let (url, server) = answering(vec![(200, versions), (405, "{}"), (200, IMAGE)]);
        let client = GlanceClient::new(config(url, None, LocationApi::Auto)).unwrap();
        let used = client.add_location(Uuid::nil(), "rbd://f/p/i/snap").await;
        assert_eq!(used.unwrap(), LocationApi::Legacy);
        let seen = server.join().unwrap();
        assert!(seen[1]
            .0
            .starts_with("post /v2/images/00000000-0000-0000-0000-000000000000/locations "));
        let body: serde_json::Value = serde_json::from_slice(&seen[1].1).unwrap();
        assert_eq!(body, serde_json::json!({"url": "rbd://f/p/i/snap"}));
        assert!(seen[2].0.starts_with("patch "));
    }

    #[tokio::test]
    async fn explicit_new_api_does_not_fall_back() {
        let (url, server) = answering(vec![(501, r#"{"message": "no"}"#)]);
        let client = GlanceClient::new(config(url, None, LocationApi::New)).unwrap();
        let err = client
            .add_location(Uuid::nil(), "rbd://f/p/i/snap")
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                GlanceError::Http {
                    status: 501,
                    method: "POST",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(server.join().unwrap().len(), 1);
    }
}
