//! The HTTP plumbing and the plain image calls: create, get, upload, delete.

use std::error::Error as _;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::Retryable;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder, StatusCode};
use uuid::Uuid;

use super::config::GlanceConfig;
use super::error::{glance_message, GlanceError};
use super::image::{ImageRecord, NewImage, TaskLookup, TaskRecord};
use super::location_api::{DetectedApi, LocationApi};
use crate::keystone::KeystoneSession;

/// A Glance Image API v2 client. Cheap to clone: clones share the HTTP client and the
/// detected location API.
#[derive(Clone)]
pub struct GlanceClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base_url: String,
    /// Kept only to mask it should Glance ever echo it in an error text.
    token: Option<String>,
    /// Where tokens come from when snapq authenticates with Keystone.
    keystone: Option<KeystoneSession>,
    request_timeout: Duration,
    location_api: LocationApi,
    detected: DetectedApi,
}

/// How often, and from what first delay, a transient failure of a delete is retried.
const DELETE_RETRIES: usize = 4;
const DELETE_RETRY_MIN_DELAY: Duration = Duration::from_millis(250);

/// A response read to the end.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) body: Bytes,
    /// The Keystone token the request carried, to mask it should Glance echo it back.
    sent_token: Option<String>,
}

impl GlanceClient {
    /// Validates the configuration; does not contact Glance.
    pub fn new(config: GlanceConfig) -> Result<GlanceClient, GlanceError> {
        let base_url = config.validated_base_url()?;
        let mut headers = HeaderMap::new();
        // Glance then sends its errors as JSON with a plain `message`, not as an HTML page.
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(token) = &config.token {
            let mut value =
                HeaderValue::from_str(token).map_err(|_| GlanceError::InvalidConfig {
                    field: "token",
                    reason: "is not a valid HTTP header value".to_string(),
                })?;
            value.set_sensitive(true);
            headers.insert("x-auth-token", value);
        }
        crate::tls::install_provider();
        let mut builder = reqwest::Client::builder();
        if let Some(path) = &config.ca_file {
            let roots = crate::tls::reqwest_roots("--glance-ca-file (SNAPQ_GLANCE_CA_FILE)", path)
                .map_err(|e| GlanceError::InvalidConfig {
                    field: "ca_file",
                    reason: e.to_string(),
                })?;
            builder = builder.tls_certs_merge(roots);
        }
        let http = builder
            .default_headers(headers)
            .connect_timeout(config.request_timeout)
            // Glance under uWSGI (`http-socket`) closes every connection after one response
            // without saying so; a pooled connection then fails the next request with "connection
            // closed before message completed". A job makes only a handful of calls: connect anew.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| GlanceError::InvalidConfig {
                field: "url",
                reason: format!("cannot build the HTTP client: {}", error_chain(&e)),
            })?;
        Ok(GlanceClient {
            inner: Arc::new(Inner {
                http,
                base_url,
                token: config.token,
                keystone: config.keystone,
                request_timeout: config.request_timeout,
                location_api: config.location_api,
                detected: DetectedApi::default(),
            }),
        })
    }

    /// The endpoint requests go to (found in the catalog, with Keystone).
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// `POST /v2/images`: a new `queued` image without data.
    pub async fn create_image(&self, req: &NewImage) -> Result<ImageRecord, GlanceError> {
        let path = "/v2/images";
        let reply = self.send(Method::POST, path, |r| r.json(req)).await?;
        let reply = self.expect_success(&Method::POST, path, reply)?;
        decode(path, &reply.body)
    }

    /// `GET /v2/images/{id}`.
    pub async fn get_image(&self, id: Uuid) -> Result<ImageRecord, GlanceError> {
        let path = format!("/v2/images/{id}");
        let reply = self.send(Method::GET, &path, |r| r).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Err(GlanceError::NotFound { id });
        }
        let reply = self.expect_success(&Method::GET, &path, reply)?;
        decode(&path, &reply.body)
    }

    /// `GET /v2/tasks/{id}`: a Glance task, e.g. the location import an image's
    /// `os_glance_import_task` names.
    pub async fn task(&self, id: &str) -> Result<TaskLookup, GlanceError> {
        let path = format!("/v2/tasks/{id}");
        let reply = self.send(Method::GET, &path, |r| r).await?;
        match reply.status {
            StatusCode::NOT_FOUND => Ok(TaskLookup::Missing),
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => Ok(TaskLookup::Hidden),
            _ => {
                let reply = self.expect_success(&Method::GET, &path, reply)?;
                decode(&path, &reply.body).map(TaskLookup::Found)
            }
        }
    }

    /// `GET /v2/tasks`: the newest `limit` tasks, newest first (by creation). None when this
    /// user may not list tasks.
    pub async fn newest_tasks(&self, limit: u32) -> Result<Option<Vec<TaskRecord>>, GlanceError> {
        #[derive(serde::Deserialize)]
        struct Tasks {
            tasks: Vec<TaskRecord>,
        }
        let path = format!("/v2/tasks?sort_key=created_at&sort_dir=desc&limit={limit}");
        let reply = self.send(Method::GET, &path, |r| r).await?;
        if matches!(
            reply.status,
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED
        ) {
            return Ok(None);
        }
        let reply = self.expect_success(&Method::GET, &path, reply)?;
        decode::<Tasks>(&path, &reply.body).map(|t| Some(t.tasks))
    }

    /// `PUT /v2/images/{id}/file`: streams `body` as the image data (the full-copy path). With
    /// `size` the request carries a `Content-Length` (Glance handles that much faster than a
    /// chunked body) and the body must yield exactly that many bytes.
    ///
    /// No deadline applies beyond connecting: the body sets the pace (Glance takes seconds per
    /// GiB); bound it from outside if needed.
    pub async fn upload(
        &self,
        id: Uuid,
        body: reqwest::Body,
        size: Option<u64>,
    ) -> Result<(), GlanceError> {
        let path = format!("/v2/images/{id}/file");
        let reply = self
            .send_with_timeout(Method::PUT, &path, None, |r| {
                let r = r
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(body);
                match size {
                    Some(size) => r.header(CONTENT_LENGTH, size),
                    None => r,
                }
            })
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Err(GlanceError::NotFound { id });
        }
        self.expect_success(&Method::PUT, &path, reply)?;
        Ok(())
    }

    /// `DELETE /v2/images/{id}`; Glance also removes the image's RBD data. An image that is
    /// already gone counts as deleted.
    ///
    /// A transient failure is retried a few times: a delete is idempotent, and Glance 33
    /// answers 500 when it comes in the instant between an image's background hash task
    /// recording itself on the image and registering its cancellation file.
    pub async fn delete_image(&self, id: Uuid) -> Result<(), GlanceError> {
        let retries = backon::ExponentialBuilder::default()
            .with_min_delay(DELETE_RETRY_MIN_DELAY)
            .with_max_times(DELETE_RETRIES)
            .with_jitter();
        (|| self.delete_image_once(id))
            .retry(retries)
            .when(GlanceError::is_transient)
            .notify(|error, delay| {
                tracing::debug!(image_id = %id, %error, ?delay, "retrying an image delete");
            })
            .await
    }

    async fn delete_image_once(&self, id: Uuid) -> Result<(), GlanceError> {
        let path = format!("/v2/images/{id}");
        let reply = self.send(Method::DELETE, &path, |r| r).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        self.expect_success(&Method::DELETE, &path, reply)?;
        Ok(())
    }

    /// Sends one request with the configured deadline and reads the whole answer. With
    /// Keystone, a 401 (a token revoked or expired early) gets one more try with a new token.
    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Reply, GlanceError> {
        let timeout = Some(self.inner.request_timeout);
        let (reply, used) = self
            .send_once(method.clone(), path, timeout, &build)
            .await?;
        match (&self.inner.keystone, used) {
            (Some(keystone), Some(used)) if reply.status == StatusCode::UNAUTHORIZED => {
                tracing::info!(
                    path,
                    "glance answered 401; authenticating with keystone anew"
                );
                keystone.invalidate(&used).await;
                let reply = self
                    .send_once(method.clone(), path, timeout, build)
                    .await?
                    .0;
                if reply.status == StatusCode::UNAUTHORIZED {
                    // Keystone just issued the token: Glance could not validate it (it may not
                    // reach Keystone), which passes, or is misconfigured, which the retries
                    // show.
                    return Err(GlanceError::FreshTokenRefused {
                        method: method_name(&method),
                        path: path.to_string(),
                    });
                }
                Ok(reply)
            }
            _ => Ok(reply),
        }
    }

    async fn send_with_timeout(
        &self,
        method: Method,
        path: &str,
        timeout: Option<Duration>,
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Result<Reply, GlanceError> {
        Ok(self.send_once(method, path, timeout, build).await?.0)
    }

    /// One request; also returns the Keystone token it carried, if any.
    async fn send_once(
        &self,
        method: Method,
        path: &str,
        timeout: Option<Duration>,
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Result<(Reply, Option<String>), GlanceError> {
        let name = method_name(&method);
        let started = Instant::now();
        let url = format!("{}{}", self.inner.base_url, path);
        let mut request = self.inner.http.request(method, url);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let mut used = None;
        if let Some(keystone) = &self.inner.keystone {
            let token = keystone.token().await.map_err(GlanceError::Keystone)?;
            let mut value = HeaderValue::from_str(&token).map_err(|_| GlanceError::Decode {
                path: "keystone token".to_string(),
                detail: "not a valid HTTP header value".to_string(),
            })?;
            value.set_sensitive(true);
            request = request.header("x-auth-token", value);
            used = Some(token);
        }
        let outcome = async {
            let response = build(request).send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>(Reply {
                status,
                body,
                sent_token: used.clone(),
            })
        }
        .await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match outcome {
            Ok(reply) => {
                tracing::debug!(
                    method = name,
                    path,
                    status = reply.status.as_u16(),
                    elapsed_ms,
                    "glance request"
                );
                Ok((reply, used))
            }
            Err(e) => {
                // Which endpoint, for errors such as an untrusted certificate.
                let detail = format!(
                    "{} (at {})",
                    transport_detail(&e, timeout),
                    self.inner.base_url
                );
                tracing::debug!(method = name, path, error = %detail, elapsed_ms, "glance request failed");
                Err(GlanceError::Transport {
                    method: name,
                    path: path.to_string(),
                    detail,
                })
            }
        }
    }

    /// The reply if its status is 2xx, else [`GlanceError::Http`] with Glance's error text.
    pub(super) fn expect_success(
        &self,
        method: &Method,
        path: &str,
        reply: Reply,
    ) -> Result<Reply, GlanceError> {
        if reply.status.is_success() {
            return Ok(reply);
        }
        Err(GlanceError::Http {
            method: method_name(method),
            path: path.to_string(),
            status: reply.status.as_u16(),
            message: glance_message(
                &reply.body,
                &[reply.sent_token.as_deref(), self.inner.token.as_deref()],
            ),
        })
    }

    pub(super) fn inner_location_api(&self) -> LocationApi {
        self.inner.location_api
    }

    pub(super) fn detected(&self) -> &DetectedApi {
        &self.inner.detected
    }
}

/// Shows the endpoint and settings, never the token.
impl fmt::Debug for GlanceClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlanceClient")
            .field("url", &self.inner.base_url)
            .field("token", &self.inner.token.as_ref().map(|_| "<redacted>"))
            .field("request_timeout", &self.inner.request_timeout)
            .field("location_api", &self.inner.location_api)
            .finish()
    }
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(
    path: &str,
    body: &[u8],
) -> Result<T, GlanceError> {
    serde_json::from_slice(body).map_err(|e| GlanceError::Decode {
        path: path.to_string(),
        detail: e.to_string(),
    })
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        _ => "OTHER",
    }
}

fn transport_detail(e: &reqwest::Error, timeout: Option<Duration>) -> String {
    match timeout {
        Some(timeout) if e.is_timeout() => format!("no complete answer within {timeout:?}"),
        _ => error_chain(e),
    }
}

/// The error and its causes on one line, without the URL (the path is reported separately).
fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(&format!(" for url ({url})"), "");
    }
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::glance::fake_server::{answering, config};

    fn stream_body(data: &'static [u8]) -> reqwest::Body {
        let chunks = data.chunks(2).map(Ok::<_, std::io::Error>);
        reqwest::Body::wrap_stream(futures::stream::iter(chunks.collect::<Vec<_>>()))
    }

    #[tokio::test]
    async fn upload_of_known_size_sends_content_length_and_token() {
        let (url, server) = answering(vec![(204, "")]);
        let client = GlanceClient::new(config(url, Some("tok-1"), LocationApi::Auto)).unwrap();
        client
            .upload(Uuid::nil(), stream_body(b"hello"), Some(5))
            .await
            .unwrap();
        let seen = server.join().unwrap();
        let (head, body) = &seen[0];
        assert!(head.starts_with("put /v2/images/00000000-0000-0000-0000-000000000000/file "));
        assert!(head.contains("content-length: 5\r\n"), "{head}");
        assert!(!head.contains("transfer-encoding"), "{head}");
        assert!(head.contains("x-auth-token: tok-1\r\n"), "{head}");
        assert!(
            head.contains("content-type: application/octet-stream\r\n"),
            "{head}"
        );
        assert_eq!(body, b"hello");
    }

    #[tokio::test]
    async fn upload_of_unknown_size_is_chunked() {
        let (url, server) = answering(vec![(204, "")]);
        let client = GlanceClient::new(config(url, None, LocationApi::Auto)).unwrap();
        client
            .upload(Uuid::nil(), stream_body(b"hello"), None)
            .await
            .unwrap();
        let (head, _) = &server.join().unwrap()[0];
        assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
        assert!(!head.contains("x-auth-token"), "{head}");
    }

    #[tokio::test]
    async fn delete_retries_a_server_error_and_treats_not_found_as_done() {
        let server_error = r#"{"message": "Operation file does not exist"}"#;
        let (url, server) = answering(vec![(500, server_error), (404, "{}")]);
        let client = GlanceClient::new(config(url, None, LocationApi::Auto)).unwrap();
        client.delete_image(Uuid::nil()).await.unwrap();
        let seen = server.join().unwrap();
        assert_eq!(seen.len(), 2, "one retry after the 500");
        assert!(seen.iter().all(|(head, _)| head.starts_with("delete ")));
    }

    #[tokio::test]
    async fn delete_does_not_retry_a_refusal() {
        let (url, server) = answering(vec![(403, r#"{"message": "no"}"#)]);
        let client = GlanceClient::new(config(url, None, LocationApi::Auto)).unwrap();
        let err = client.delete_image(Uuid::nil()).await.unwrap_err();
        assert!(
            matches!(err, GlanceError::Http { status: 403, .. }),
            "{err}"
        );
        assert_eq!(server.join().unwrap().len(), 1);
    }

    #[test]
    fn debug_and_config_errors_hide_the_token() {
        let with_token = |token| config("http://glance".into(), Some(token), LocationApi::Auto);
        let client = GlanceClient::new(with_token("tok-2")).unwrap();
        let shown = format!("{client:?}");
        assert!(
            !shown.contains("tok-2") && shown.contains("<redacted>"),
            "{shown}"
        );

        let err = GlanceClient::new(with_token("bad\ntok-3")).unwrap_err();
        assert!(matches!(
            err,
            GlanceError::InvalidConfig { field: "token", .. }
        ));
        assert!(!err.to_string().contains("tok-3"));
    }
}
