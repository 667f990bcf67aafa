//! `snapq bench --fallback`: the full-copy fallback beside `rbd export - | curl -T -` into
//! Glance's `PUT /file`, on the same disk in one run, and the dead-letter worker's peak memory
//! as the disk grows. A dead-letter worker must be consuming the topic.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use snapq_common::glance::{GlanceClient, NewImage};
use snapq_common::job::{DeadLetterReason, JobState};
use snapq_common::message::{DiskSpec, SnapshotRequest};
use snapq_common::rbd::{run_blocking, Cluster};

use crate::bench::{make_disk, median, BenchConfig, EXTENT, MIB};
use crate::Producer;

pub struct FallbackBench {
    pub glance_url: String,
    pub ceph_conf: String,
    pub ceph_user: String,
    /// The dead-letter worker's pid, to read its peak resident memory.
    pub worker_pid: Option<u32>,
}

fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub async fn run(
    config: BenchConfig,
    extra: FallbackBench,
    cluster: Cluster,
    glance: GlanceClient,
) -> anyhow::Result<()> {
    let vms = cluster.pool(&config.nova_pool)?;
    let producer = Producer::connect(&config.amqp_url, config.topology.clone()).await?;
    // A small disk first, then the full size: peak memory must not grow with the disk.
    let sizes = [
        (1u64, (config.written_mib / config.disk_gib.max(1)).max(4)),
        (config.disk_gib, config.written_mib),
    ];
    println!(
        "{:<10} {:<40} {:>10} {:>12} {:>14}",
        "disk", "path", "seconds", "MiB/s (data)", "worker peak MiB"
    );
    for (gib, written) in sizes {
        let disk = format!("{}_disk", uuid::Uuid::new_v4());
        make_disk(&vms, &disk, gib * 1024 * MIB, written * MIB / EXTENT).await?;
        let mut pipe = Vec::new();
        let mut snapq = Vec::new();
        let mut made = Vec::new();
        for _ in 0..config.runs {
            let (seconds, id) = export_pipe(&extra, &glance, &config.nova_pool, &disk).await?;
            pipe.push(seconds);
            made.push(id);
            let (seconds, id) = through_fallback(&producer, &glance, &config, &disk).await?;
            snapq.push(seconds);
            made.push(id);
        }
        let peak = extra
            .worker_pid
            .and_then(peak_rss_mib)
            .map_or("?".into(), |m| format!("{m:.1}"));
        let label = format!("{gib} GiB/{written} MiB");
        let (p, s) = (median(&pipe), median(&snapq));
        println!(
            "{label:<10} {:<40} {p:>10.2} {:>12.1} {:>14}",
            "rbd export - | curl -T - (chunked)",
            written as f64 / p,
            "-"
        );
        println!(
            "{label:<10} {:<40} {s:>10.2} {:>12.1} {peak:>14}",
            "snapq fallback (librbd -> PUT /file)",
            written as f64 / s
        );
        println!("{:<10} ratio snapq/pipe: {:.2}", "", s / p);
        for id in made {
            let _ = glance.delete_image(id).await;
        }
        let vms2 = vms.clone();
        let _ = run_blocking(move || vms2.remove_image(&disk)).await;
    }
    producer.close().await;
    Ok(())
}

async fn export_pipe(
    extra: &FallbackBench,
    glance: &GlanceClient,
    pool: &str,
    disk: &str,
) -> anyhow::Result<(f64, uuid::Uuid)> {
    let image = glance
        .create_image(&NewImage::raw("snapq-bench-pipe"))
        .await?;
    let url = format!(
        "{}/v2/images/{}/file",
        extra.glance_url.trim_end_matches('/'),
        image.id
    );
    let spec = format!("{pool}/{disk}");
    let started = Instant::now();
    let status = tokio::process::Command::new("sh")
        .args([
            "-c",
            "rbd -c \"$0\" --id \"$1\" export \"$2\" - 2>/dev/null | curl -sf -T - -H 'Content-Type: application/octet-stream' \"$3\"",
            &extra.ceph_conf,
            &extra.ceph_user,
            &spec,
            &url,
        ])
        .status()
        .await
        .context("rbd export | curl")?;
    if !status.success() {
        bail!("rbd export | curl failed: {status}");
    }
    glance
        .wait_active(
            image.id,
            Duration::from_secs(3600),
            Duration::from_millis(100),
        )
        .await?;
    Ok((started.elapsed().as_secs_f64(), image.id))
}

async fn through_fallback(
    producer: &Producer,
    glance: &GlanceClient,
    config: &BenchConfig,
    disk: &str,
) -> anyhow::Result<(f64, uuid::Uuid)> {
    let image = glance
        .create_image(&NewImage::raw("snapq-bench-fallback"))
        .await?;
    let request = SnapshotRequest::new(
        DiskSpec::new(config.nova_pool.clone(), disk.to_string())?,
        image.id,
        "snapq-bench-fallback".into(),
    );
    let state = JobState {
        reason: Some(DeadLetterReason::Fallback.name().into()),
        job_id: Some(request.unique_id.clone()),
        ..JobState::fresh()
    };
    let topology = &config.topology;
    let started = Instant::now();
    let reply = producer
        .call_via(
            request,
            &topology.dead_letter_exchange,
            &topology.dead_letter_routing_key,
            state.to_headers(),
            Duration::from_secs(3600),
        )
        .await?;
    if let Some(failure) = reply.failure {
        bail!("fallback failed: {}", failure.message);
    }
    Ok((started.elapsed().as_secs_f64(), image.id))
}
