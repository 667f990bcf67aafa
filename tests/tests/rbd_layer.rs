//! The safe librbd layer against the real dev cluster.

use snapq_common::rbd::{run_blocking, Pool, RbdErrorKind};
use snapq_tests::{cluster_as, pattern, unique_name, Services};

const MIB: u64 = 1024 * 1024;

fn pools(cluster: &snapq_common::rbd::Cluster) -> (Pool, Pool) {
    let services = Services::from_env();
    (
        cluster.pool(&services.nova_pool).expect("open nova pool"),
        cluster
            .pool(&services.glance_pool)
            .expect("open glance pool"),
    )
}

#[tokio::test]
async fn snapshot_clone_flatten_and_cleanup_keep_the_data() {
    let cluster = cluster_as("nova").await;
    let (vms, images) = pools(&cluster);
    let disk = unique_name("rbdlayer-disk");
    let clone = unique_name("rbdlayer-clone");
    let (disk2, clone2) = (disk.clone(), clone.clone());
    run_blocking(move || {
        vms.create_image(&disk2, 64 * MIB)?;
        let mut image = vms.open(&disk2)?;
        image.write_at(4 * MIB, &pattern(1, MIB as usize))?;
        image.write_at(40 * MIB, &pattern(2, MIB as usize))?;
        image.flush()?;
        assert_eq!(image.size()?, 64 * MIB);
        assert_eq!(
            image.used_bytes()?,
            8 * MIB,
            "two 4 MiB objects are allocated"
        );

        image.create_snap("s1")?;
        assert!(image.snap_exists("s1")?);
        assert!(!image.snap_exists("nope")?);
        image.protect_snap("s1")?;
        assert!(image.is_snap_protected("s1")?);
        assert_eq!(
            image
                .snapshots()?
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["s1"]
        );

        let features = image.features()?;
        images.clone_from(&vms, &disk2, "s1", &clone2, features)?;
        let snap_view = vms.open_read_only(&disk2, Some("s1"))?;
        let children = snap_view.children()?;
        assert_eq!(children.len(), 1);
        assert_eq!(
            (children[0].pool.as_str(), children[0].image.as_str()),
            (images.name(), clone2.as_str())
        );
        drop(snap_view);

        let err = vms
            .remove_image(&disk2)
            .expect_err("an image whose snapshot has a clone cannot go");
        assert_eq!(err.kind, RbdErrorKind::HasSnapshots, "{err}");

        let mut cloned = images.open(&clone2)?;
        let parent = cloned.parent()?.expect("a fresh clone has a parent");
        assert_eq!(
            (
                parent.pool.as_str(),
                parent.image.as_str(),
                parent.snap.as_str()
            ),
            (vms.name(), disk2.as_str(), "s1")
        );
        let mut calls = 0u32;
        let mut last_total = 0u64;
        cloned.flatten(&mut |_, total| {
            calls += 1;
            last_total = total;
            true
        })?;
        assert!(calls > 0 && last_total > 0, "flatten reports progress");
        assert_eq!(cloned.parent()?, None, "a flattened clone has no parent");
        let mut buf = vec![0u8; MIB as usize];
        cloned.read_at(40 * MIB, &mut buf)?;
        assert!(
            buf == pattern(2, MIB as usize),
            "flattened clone holds the source data"
        );
        assert_eq!(
            cloned.used_bytes()?,
            8 * MIB,
            "flatten keeps the clone sparse"
        );
        drop(cloned);

        image.unprotect_snap("s1")?;
        image.remove_snap("s1")?;
        assert!(image.snapshots()?.is_empty());
        drop(image);
        images.remove_image(&clone2)?;
        vms.remove_image(&disk2)?;
        assert!(!vms.image_exists(&disk2)?);
        Ok(())
    })
    .await
    .expect("rbd operations succeed");
}

#[tokio::test]
async fn errno_becomes_typed_errors_naming_the_target() {
    let cluster = cluster_as("nova").await;
    let (vms, _) = pools(&cluster);
    let name = unique_name("rbdlayer-errs");
    let name2 = name.clone();
    run_blocking(move || {
        let missing = vms.open(&name2).expect_err("image does not exist");
        assert_eq!(missing.kind, RbdErrorKind::NotFound);
        assert!(
            missing.to_string().contains(&format!("vms/{name2}")),
            "{missing}"
        );
        vms.create_image(&name2, 8 * MIB)?;
        let exists = vms
            .create_image(&name2, 8 * MIB)
            .expect_err("second create fails");
        assert_eq!(exists.kind, RbdErrorKind::AlreadyExists);
        let mut image = vms.open(&name2)?;
        image.create_snap("keep")?;
        drop(image);
        let has_snaps = vms
            .remove_image(&name2)
            .expect_err("image with snapshots cannot go");
        assert_eq!(has_snaps.kind, RbdErrorKind::HasSnapshots);
        let mut image = vms.open(&name2)?;
        image.remove_snap("keep")?;
        let gone = image.remove_snap("keep").expect_err("removing twice fails");
        assert!(gone.is_not_found());
        drop(image);
        vms.remove_image(&name2)?;
        Ok(())
    })
    .await
    .expect("rbd operations succeed");
}

#[tokio::test]
async fn read_only_user_gets_permission_denied_on_clone_and_leaves_nothing() {
    let admin = cluster_as("nova").await;
    let ro = cluster_as("nova-ro").await;
    let (vms, images) = pools(&admin);
    let (ro_vms, ro_images) = pools(&ro);
    let disk = unique_name("rbdlayer-ro");
    let child = unique_name("rbdlayer-ro-clone");
    let (disk2, child2) = (disk.clone(), child.clone());
    run_blocking(move || {
        vms.create_image(&disk2, 8 * MIB)?;
        let mut image = ro_vms.open(&disk2)?;
        image.create_snap("s")?;
        image.protect_snap("s")?;
        let features = image.features()?;
        let err = ro_images
            .clone_from(&ro_vms, &disk2, "s", &child2, features)
            .expect_err("nova-ro cannot write to the images pool");
        assert_eq!(err.kind, RbdErrorKind::PermissionDenied, "{err}");
        assert!(err.is_fallback_reason());
        assert!(
            !images.image_exists(&child2)?,
            "the failed clone leaves no image"
        );
        assert!(
            !images.trash_image_names()?.contains(&child2),
            "nor a trashed one"
        );
        image.unprotect_snap("s")?;
        image.remove_snap("s")?;
        drop(image);
        vms.remove_image(&disk2)?;
        Ok(())
    })
    .await
    .expect("rbd operations succeed");
}

#[tokio::test]
async fn fsid_matches_the_cluster() {
    let cluster = cluster_as("nova").await;
    let output = std::process::Command::new("ceph")
        .args(["-c", &Services::from_env().ceph_conf, "fsid"])
        .output()
        .expect("run the ceph CLI");
    assert!(output.status.success());
    assert_eq!(
        cluster.fsid(),
        String::from_utf8_lossy(&output.stdout).trim()
    );
    assert!(snapq_common::rbd::librbd_version().starts_with("1."));
}

#[tokio::test]
async fn connecting_as_an_unknown_user_fails_with_an_error() {
    let config = snapq_common::rbd::CephConfig {
        conf_path: Services::from_env().ceph_conf,
        user: "no-such-user".into(),
        op_timeout: snapq_common::rbd::CephConfig::DEFAULT_OP_TIMEOUT,
    };
    let err = snapq_common::rbd::connect(config, std::time::Duration::from_secs(30))
        .await
        .expect_err("unknown users cannot connect");
    assert!(err.to_string().contains("client.no-such-user"), "{err}");
}

#[tokio::test]
async fn image_metadata_round_trips_on_a_clone() {
    let cluster = cluster_as("nova").await;
    let (vms, images) = pools(&cluster);
    let disk = unique_name("rbdlayer-meta");
    let clone = unique_name("rbdlayer-meta-clone");
    let (disk2, clone2) = (disk.clone(), clone.clone());
    let (vms2, images2) = (vms.clone(), images.clone());
    run_blocking(move || {
        vms2.create_image(&disk2, 64 * MIB)?;
        let mut image = vms2.open(&disk2)?;
        for i in 0..16 {
            image.write_at(i * 4 * MIB, &pattern(i + 3, MIB as usize))?;
        }
        image.flush()?;
        image.create_snap("s1")?;
        let features = image.features()?;
        images2.clone_from(&vms2, &disk2, "s1", &clone2, features)?;
        let mut cloned = images2.open(&clone2)?;

        assert_eq!(cloned.metadata("snapq.test")?, None);
        cloned.set_metadata("snapq.test", "{\"a\": 1}")?;
        assert_eq!(
            cloned.metadata("snapq.test")?.as_deref(),
            Some("{\"a\": 1}")
        );

        cloned.flatten(&mut |_, _| true)?;
        assert_eq!(cloned.parent()?, None);
        drop(cloned);
        images2.remove_image(&clone2)?;
        // The disk's handle stays the one opened above: a second handle
        // would leave the first one watching and the removal busy.
        image.remove_snap("s1")?;
        drop(image);
        vms2.remove_image(&disk2)
    })
    .await
    .expect("metadata round trip on a clone");
}

/// librbd removes a snapshot by first moving it to its trash namespace; a removal cut short
/// leaves it there with no clones, invisible by name, and the disk can no longer be deleted.
/// The same state is made here on purpose: a client that may only read the parent's pool
/// flattens the parent's last clone, which detaches it but cannot finish removing the trashed
/// snapshot. snapq's snapshot removal finds it by its original name and removes it.
#[tokio::test]
async fn snapshot_left_in_the_trash_namespace_is_found_and_removed() {
    let admin = cluster_as("nova").await;
    let ro = cluster_as("nova-ro").await;
    let (vms, images) = pools(&admin);
    let (ro_vms, _) = pools(&ro);
    // The parent lives where nova-ro may only read (Glance's pool), the clone where it may
    // write (the instance pool).
    let parent = unique_name("rbdlayer-trash-parent");
    let child = unique_name("rbdlayer-trash-child");
    let image_id = uuid::Uuid::new_v4();
    let snap = format!("snapq-{image_id}");
    let lease = snapq_worker::lease::JobLease::acquire(
        &vms,
        image_id,
        ("rbd-layer-test", "vms/rbd-layer-test-disk"),
        "rbd-layer-test",
        std::time::Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|e| panic!("take a lease: {e:?}"));
    let token = lease.token();
    let (parent2, child2, snap2) = (parent.clone(), child.clone(), snap.clone());
    run_blocking(move || {
        images.create_image(&parent2, 8 * MIB)?;
        let mut disk = images.open(&parent2)?;
        disk.write_at(0, &pattern(7, MIB as usize))?;
        disk.flush()?;
        disk.create_snap(&snap2)?;
        let features = disk.features()?;
        vms.clone_from(&images, &parent2, &snap2, &child2, features)?;
        disk.remove_snap(&snap2)?;
        assert!(!disk.snap_exists(&snap2)?, "gone by name");
        assert_eq!(
            disk.trashed_snaps_named(&snap2)?.len(),
            1,
            "a snapshot with a clone moves to the trash namespace"
        );

        ro_vms.open(&child2)?.flatten(&mut |_, _| true)?;
        let trashed = disk.trashed_snaps_named(&snap2)?;
        assert_eq!(
            trashed.len(),
            1,
            "the read-only client detached the clone but could not remove the snapshot"
        );
        assert!(
            images.remove_image(&parent2).is_err(),
            "a disk with a trashed snapshot cannot be removed"
        );
        drop(disk);

        assert!(
            snapq_worker::artefacts::remove_disk_snapshot(&images, &parent2, &snap2, &token)?,
            "the trashed snapshot counts as removed"
        );
        let disk = images.open(&parent2)?;
        assert!(disk.trashed_snaps_named(&snap2)?.is_empty());
        assert!(
            disk.snapshots()?.is_empty(),
            "no snapshot of any kind is left"
        );
        drop(disk);
        assert!(
            !snapq_worker::artefacts::remove_disk_snapshot(&images, &parent2, &snap2, &token)?,
            "nothing left to remove the second time"
        );
        images.remove_image(&parent2)?;
        vms.remove_image(&child2)
    })
    .await
    .expect("rbd operations succeed");
    lease.release(snapq_worker::lease::Release::End).await;
}

/// librbd makes a snapshot in steps; a worker killed between them leaves one that is listed
/// but cannot be opened (no object map was written for it), and Glance then refuses its
/// location as "Invalid location" for ever. The state is made here by removing the
/// snapshot's object map; snapq's snapshot step makes such a snapshot again.
#[tokio::test]
async fn half_made_snapshot_is_made_again() {
    let cluster = cluster_as("nova").await;
    let (_, images) = pools(&cluster);
    let name = unique_name("rbdlayer-halfsnap");
    let image_id = uuid::Uuid::new_v4();
    let lease = snapq_worker::lease::JobLease::acquire(
        &images,
        image_id,
        ("rbd-layer-test", "vms/rbd-layer-test-disk"),
        "rbd-layer-test",
        std::time::Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|e| panic!("take a lease: {e:?}"));
    let token = lease.token();
    let (name2, images2) = (name.clone(), images.clone());
    let snap_id = run_blocking(move || {
        images2.create_image(&name2, 8 * MIB)?;
        let mut image = images2.open(&name2)?;
        image.write_at(0, &pattern(9, MIB as usize))?;
        image.flush()?;
        image.create_snap("snap")?;
        image.protect_snap("snap")?;
        let snaps = image.snapshots()?;
        Ok(snaps.iter().find(|s| s.name == "snap").map(|s| s.id))
    })
    .await
    .expect("make the image")
    .expect("the snapshot is listed");

    let info = std::process::Command::new("rbd")
        .args(["-c", &Services::from_env().ceph_conf, "--id", "nova"])
        .args(["info", "--format", "json", &format!("images/{name}")])
        .output()
        .expect("run rbd info");
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).expect("rbd info json");
    let id = info["id"].as_str().expect("image id").to_string();
    let object_map = format!("rbd_object_map.{id}.{snap_id:016x}");
    images
        .remove_object(&object_map)
        .unwrap_or_else(|e| panic!("remove {object_map}: {e}"));

    let (name2, images2) = (name.clone(), images.clone());
    run_blocking(move || {
        let err = images2
            .open_read_only(&name2, Some("snap"))
            .expect_err("the half-made snapshot cannot be opened");
        assert!(err.is_not_found(), "{err}");
        let mut image = images2.open(&name2)?;
        assert!(image.snap_exists("snap")?, "but it is listed");

        let done =
            snapq_worker::artefacts::ensure_snapshot(&images2, &name2, &mut image, "snap", &token)?;
        assert!(done.made && done.protected, "{done:?}");
        let reopened = images2.open_read_only(&name2, Some("snap"))?;
        let mut buf = vec![0u8; MIB as usize];
        reopened.read_at(0, &mut buf)?;
        assert_eq!(
            buf,
            pattern(9, MIB as usize),
            "the new snapshot holds the data"
        );
        drop(reopened);

        let again =
            snapq_worker::artefacts::ensure_snapshot(&images2, &name2, &mut image, "snap", &token)?;
        assert!(
            !again.made && !again.protected,
            "a sound snapshot is left alone"
        );
        image.unprotect_snap("snap")?;
        image.remove_snap("snap")?;
        drop(image);
        images2.remove_image(&name2)
    })
    .await
    .expect("rbd operations succeed");
    lease.release(snapq_worker::lease::Release::End).await;
}
