//! The Glance client against the real dev Glance (and, for the legacy location API, a second
//! Glance with `show_multiple_locations = True` at `SNAPQ_GLANCE_LEGACY_URL`).

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use snapq_common::glance::{GlanceClient, GlanceConfig, GlanceError, LocationApi, NewImage};
use snapq_tests::{pattern, setting, unique_name, Services};
use uuid::Uuid;

const MIB: usize = 1024 * 1024;
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

fn client_for(url: String, location_api: LocationApi) -> GlanceClient {
    GlanceClient::new(GlanceConfig {
        url,
        ca_file: None,
        token: None,
        keystone: None,
        request_timeout: Duration::from_secs(30),
        location_api,
    })
    .expect("valid glance config")
}

fn glance() -> GlanceClient {
    client_for(Services::from_env().glance_url, LocationApi::Auto)
}

fn legacy_glance(location_api: LocationApi) -> GlanceClient {
    client_for(setting("SNAPQ_GLANCE_LEGACY_URL"), location_api)
}

fn raw_image(prefix: &str) -> NewImage {
    let mut image = NewImage::raw(unique_name(prefix));
    image.id = Some(Uuid::new_v4());
    image
}

/// Runs the `rbd` CLI as the nova user; its progress output on stderr is ignored.
fn rbd(args: &[&str]) -> Output {
    let services = Services::from_env();
    Command::new("rbd")
        .args(["-c", &services.ceph_conf, "--id", &services.ceph_user])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect("run the rbd CLI")
}

fn rbd_ok(args: &[&str]) -> String {
    let output = rbd(args);
    assert!(output.status.success(), "rbd {args:?} failed");
    String::from_utf8(output.stdout).expect("rbd prints UTF-8")
}

fn rbd_exists(spec: &str) -> bool {
    rbd(&["info", spec]).status.success()
}

fn rbd_size(spec: &str) -> u64 {
    let info: serde_json::Value =
        serde_json::from_str(&rbd_ok(&["info", "--format", "json", spec])).expect("rbd info json");
    info["size"].as_u64().expect("rbd info has a size")
}

fn fsid() -> String {
    let services = Services::from_env();
    let output = Command::new("ceph")
        .args([
            "-c",
            &services.ceph_conf,
            "--id",
            &services.ceph_user,
            "fsid",
        ])
        .stderr(Stdio::null())
        .output()
        .expect("run the ceph CLI");
    assert!(output.status.success(), "ceph fsid failed");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// Makes `images/<id>` the way snapq does: a flattened clone of a disk in the nova pool, with a
/// protected snapshot `snap`. The source disk is removed again. Returns the location URL.
fn prepare_flattened_clone(id: Uuid) -> String {
    let services = Services::from_env();
    let disk = format!("{}/{}", services.nova_pool, unique_name("glance-test-disk"));
    let base = format!("{disk}@base");
    let target = format!("{}/{id}", services.glance_pool);
    rbd_ok(&["create", "--size", "8M", &disk]);
    rbd_ok(&[
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "1M",
        "--io-total",
        "3M",
        &disk,
    ]);
    rbd_ok(&["snap", "create", &base]);
    rbd_ok(&["snap", "protect", &base]);
    rbd_ok(&["clone", &base, &target]);
    rbd_ok(&["flatten", &target]);
    rbd_ok(&["snap", "unprotect", &base]);
    rbd_ok(&["snap", "rm", &base]);
    rbd_ok(&["rm", &disk]);
    rbd_ok(&["snap", "create", &format!("{target}@snap")]);
    rbd_ok(&["snap", "protect", &format!("{target}@snap")]);
    format!("rbd://{}/{}/{id}/snap", fsid(), services.glance_pool)
}

/// md5 or sha512 of `data` as lowercase hex, by the coreutils tool `tool` (`md5sum`, ...).
fn digest(tool: &str, data: &[u8]) -> String {
    let mut child = Command::new(tool)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run a coreutils digest tool");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{tool} failed");
    let text = String::from_utf8(output.stdout).unwrap();
    text.split_whitespace().next().unwrap().to_string()
}

/// A body that arrives in 64 KiB pieces, as a disk read would.
fn chunked_body(data: &[u8]) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

#[tokio::test]
async fn creates_queued_image_with_caller_chosen_id() {
    let glance = glance();
    let mut request = raw_image("glance-test-create");
    request
        .extra
        .insert("snapq_test".to_string(), "create".to_string());
    let id = request.id.unwrap();

    let created = glance.create_image(&request).await.expect("create image");
    assert_eq!(created.id, id);
    assert_eq!(created.status, "queued");
    assert!(!created.is_active());
    assert_eq!(created.name.as_deref(), Some(request.name.as_str()));
    assert_eq!(created.disk_format.as_deref(), Some("raw"));
    assert_eq!(created.size, None);

    let fetched = glance.get_image(id).await.expect("get image");
    assert_eq!((fetched.id, fetched.status.as_str()), (id, "queued"));

    let again = glance
        .create_image(&request)
        .await
        .expect_err("the id is taken");
    assert!(
        matches!(again, GlanceError::Http { status: 409, .. }),
        "{again:?}"
    );
    glance.delete_image(id).await.expect("delete image");
}

#[tokio::test]
async fn get_of_unknown_image_is_not_found() {
    let id = Uuid::new_v4();
    let err = glance().get_image(id).await.expect_err("no such image");
    assert!(
        matches!(err, GlanceError::NotFound { id: missing } if missing == id),
        "{err:?}"
    );
    assert!(!err.is_transient());
}

#[tokio::test]
async fn unreachable_glance_is_a_transient_transport_error() {
    // Port 9 (discard) is closed on loopback here: the connection is refused at once.
    let glance = client_for("http://127.0.0.1:9".to_string(), LocationApi::Auto);
    let err = glance
        .get_image(Uuid::new_v4())
        .await
        .expect_err("nothing listens");
    assert!(
        matches!(err, GlanceError::Transport { method: "GET", .. }),
        "{err:?}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn new_location_api_makes_image_active_with_rbd_size() {
    let glance = glance();
    let request = raw_image("glance-test-newloc");
    let id = request.id.unwrap();
    glance.create_image(&request).await.expect("create image");
    let url = prepare_flattened_clone(id);
    let rbd_spec = format!("{}/{id}", Services::from_env().glance_pool);

    let used = glance.add_location(id, &url).await.expect("add location");
    assert_eq!(used, LocationApi::New, "Glance 33 offers API 2.17");
    let image = glance
        .wait_active(id, ACTIVE_TIMEOUT, POLL)
        .await
        .expect("image becomes active");
    assert!(image.is_active());
    assert_eq!(image.size, Some(rbd_size(&rbd_spec)));
    assert_eq!(image.direct_url.as_deref(), Some(url.as_str()));

    // Glance deletes a location image (and its RBD image) once its background hash ran,
    // which needs `[oslo_concurrency] lock_path` (set by dev/glance.sh).
    glance.delete_image(id).await.expect("delete image");
    assert!(
        rbd(&["info", &rbd_spec]).status.code() != Some(0),
        "the RBD image is gone"
    );
}

#[tokio::test]
async fn legacy_patch_location_api_makes_image_active() {
    let legacy = legacy_glance(LocationApi::Legacy);
    let request = raw_image("glance-test-legacyloc");
    let id = request.id.unwrap();
    legacy.create_image(&request).await.expect("create image");
    let url = prepare_flattened_clone(id);
    let rbd_spec = format!("{}/{id}", Services::from_env().glance_pool);

    let used = legacy.add_location(id, &url).await.expect("add location");
    assert_eq!(used, LocationApi::Legacy);
    let image = legacy.get_image(id).await.expect("get image");
    assert!(image.is_active(), "the PATCH is synchronous: {image:?}");
    assert_eq!(image.size, Some(rbd_size(&rbd_spec)));
    legacy.delete_image(id).await.expect("delete image");
    assert!(!rbd_exists(&rbd_spec), "Glance removes the RBD image");
}

#[tokio::test]
async fn legacy_patch_is_refused_without_show_multiple_locations() {
    let glance = client_for(Services::from_env().glance_url, LocationApi::Legacy);
    let request = raw_image("glance-test-legacy-refused");
    let id = request.id.unwrap();
    glance.create_image(&request).await.expect("create image");
    // Glance refuses before looking at the URL, so no RBD image is needed.
    let url = format!("rbd://{}/images/{id}/snap", fsid());

    let err = glance
        .add_location(id, &url)
        .await
        .expect_err("show_multiple_locations is False");
    assert!(
        matches!(
            err,
            GlanceError::Http {
                status: 403,
                method: "PATCH",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.refuses_location(), "a reason for the full copy: {err}");
    assert!(!err.is_transient());
    let image = glance.get_image(id).await.expect("get image");
    assert_eq!(image.status, "queued");
    glance.delete_image(id).await.expect("delete image");
}

#[tokio::test]
async fn wait_active_times_out_on_stuck_queued_image() {
    let glance = glance();
    let request = raw_image("glance-test-stuck");
    let id = request.id.unwrap();
    glance.create_image(&request).await.expect("create image");
    let missing = format!(
        "rbd://{}/{}/{}/snap",
        fsid(),
        Services::from_env().glance_pool,
        unique_name("glance-test-missing")
    );

    let used = glance
        .add_location(id, &missing)
        .await
        .expect("Glance accepts the location before trying it");
    assert_eq!(used, LocationApi::New);
    let waited = Duration::from_secs(5);
    let started = std::time::Instant::now();
    let err = glance
        .wait_active(id, waited, POLL)
        .await
        .expect_err("the location cannot be opened");
    match &err {
        GlanceError::NotActive {
            id: stuck,
            status,
            waited: reported,
        } => {
            assert_eq!(*stuck, id);
            assert_eq!(status, "queued");
            assert!(*reported >= waited, "{reported:?}");
        }
        other => panic!("expected NotActive, got {other:?}"),
    }
    assert!(started.elapsed() < waited + Duration::from_secs(3));
    assert!(err.is_transient());
    glance.delete_image(id).await.expect("delete image");
}

#[tokio::test]
async fn upload_streams_bytes_and_image_becomes_active() {
    let glance = glance();
    let request = raw_image("glance-test-upload");
    let id = request.id.unwrap();
    glance.create_image(&request).await.expect("create image");
    let data = pattern(7, 4 * MIB);

    glance
        .upload(id, chunked_body(&data), Some(data.len() as u64))
        .await
        .expect("upload");
    let image = glance
        .wait_active(id, ACTIVE_TIMEOUT, POLL)
        .await
        .expect("image becomes active");
    assert_eq!(image.size, Some(data.len() as u64));
    assert_eq!(image.checksum, Some(digest("md5sum", &data)));
    assert_eq!(image.os_hash_algo.as_deref(), Some("sha512"));
    assert_eq!(image.os_hash_value, Some(digest("sha512sum", &data)));
    glance.delete_image(id).await.expect("delete image");
}

#[tokio::test]
async fn upload_of_unknown_size_is_sent_chunked() {
    let glance = glance();
    let request = raw_image("glance-test-upload-chunked");
    let id = request.id.unwrap();
    glance.create_image(&request).await.expect("create image");
    let data = pattern(8, MIB + 123);

    glance
        .upload(id, chunked_body(&data), None)
        .await
        .expect("upload");
    let image = glance
        .wait_active(id, ACTIVE_TIMEOUT, POLL)
        .await
        .expect("image becomes active");
    assert_eq!(image.size, Some(data.len() as u64));
    assert_eq!(image.checksum, Some(digest("md5sum", &data)));
    glance.delete_image(id).await.expect("delete image");
}

#[tokio::test]
async fn delete_removes_image_and_is_idempotent() {
    let glance = glance();
    let request = raw_image("glance-test-delete");
    let id = request.id.unwrap();
    glance.create_image(&request).await.expect("create image");
    let data = pattern(9, MIB);
    glance
        .upload(id, chunked_body(&data), Some(data.len() as u64))
        .await
        .expect("upload");
    let rbd_spec = format!("{}/{id}", Services::from_env().glance_pool);
    assert!(rbd_exists(&rbd_spec), "the upload created the RBD image");

    glance.delete_image(id).await.expect("delete image");
    let err = glance.get_image(id).await.expect_err("deleted");
    assert!(matches!(err, GlanceError::NotFound { .. }), "{err:?}");
    glance
        .delete_image(id)
        .await
        .expect("deleting again succeeds");
    assert!(!rbd_exists(&rbd_spec), "Glance removed the RBD image");
}
