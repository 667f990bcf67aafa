//! `snapq bench`: the direct path through snapq beside the same operations done bare (librbd
//! and Glance calls in this process, no queue), on the same disk, in one run, so the ratio
//! holds however noisy the machine is. A worker must be consuming the topic.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use snapq_common::amqp::Topology;
use snapq_common::glance::{GlanceClient, NewImage};
use snapq_common::message::{DiskSpec, SnapshotRequest};
use snapq_common::rbd::{run_blocking, Cluster, Pool};

use crate::Producer;

pub(crate) const MIB: u64 = 1024 * 1024;
pub(crate) const EXTENT: u64 = 4 * MIB;

pub struct BenchConfig {
    pub disk_gib: u64,
    pub written_mib: u64,
    pub runs: u32,
    pub nova_pool: String,
    pub glance_pool: String,
    pub amqp_url: String,
    pub topology: Topology,
}

struct Measured {
    bare: Vec<f64>,
    snapq: Vec<f64>,
    /// Per run: the call's time outside the steps (request publish, deliveries, leases,
    /// checkpoints, reply), per step.
    overhead_per_step_ms: Vec<f64>,
    /// Every checkpoint hop: from a step's end to the next step's start, as the job's history
    /// records them (checkpoint publish and confirm, ack, redelivery, lease).
    hop_ms: Vec<f64>,
}

pub async fn run(
    config: BenchConfig,
    cluster: Cluster,
    glance: GlanceClient,
) -> anyhow::Result<()> {
    let vms = cluster.pool(&config.nova_pool)?;
    let images = cluster.pool(&config.glance_pool)?;
    let disk = format!("{}_disk", uuid::Uuid::new_v4());
    eprintln!(
        "creating {}/{disk}: {} GiB, {} MiB written",
        config.nova_pool, config.disk_gib, config.written_mib
    );
    make_disk(
        &vms,
        &disk,
        config.disk_gib * 1024 * MIB,
        config.written_mib * MIB / EXTENT,
    )
    .await?;
    let producer = Producer::connect(&config.amqp_url, config.topology.clone()).await?;
    let mut measured = Measured {
        bare: vec![],
        snapq: vec![],
        overhead_per_step_ms: vec![],
        hop_ms: vec![],
    };
    let mut made = Vec::new();
    let result = async {
        for run in 0..config.runs {
            // Alternate the order so neither path always runs on a warmer cluster.
            for bare_first in [run % 2 == 0, run % 2 != 0] {
                if bare_first {
                    let (seconds, id) =
                        bare_direct(&cluster, &vms, &images, &disk, &glance).await?;
                    made.push(id);
                    measured.bare.push(seconds);
                } else {
                    let (seconds, outside_steps, hops, id) =
                        through_snapq(&producer, &glance, &config, &disk).await?;
                    made.push(id);
                    measured.hop_ms.extend(hops);
                    measured
                        .overhead_per_step_ms
                        .push(outside_steps * 1000.0 / 5.0);
                    measured.snapq.push(seconds);
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    producer.close().await;
    for id in made {
        let _ = glance.delete_image(id).await;
    }
    let vms2 = vms.clone();
    let _ = run_blocking(move || vms2.remove_image(&disk)).await;
    result?;
    print_table(&config, &measured);
    Ok(())
}

pub(crate) async fn make_disk(
    pool: &Pool,
    name: &str,
    size: u64,
    extents: u64,
) -> anyhow::Result<()> {
    let (pool, name) = (pool.clone(), name.to_string());
    run_blocking(move || {
        pool.create_image(&name, size)?;
        let mut image = pool.open(&name)?;
        let extents = extents.max(1);
        let stride = (size / extents) / EXTENT * EXTENT;
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut buf = vec![0u8; EXTENT as usize];
        for i in 0..extents {
            for chunk in buf.chunks_exact_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes());
            }
            image.write_at(i * stride, &buf)?;
        }
        image.flush()
    })
    .await
    .context("creating the benchmark disk")
}

/// The five steps done bare, as services.md's baseline does with the rbd CLI.
async fn bare_direct(
    cluster: &Cluster,
    vms: &Pool,
    images: &Pool,
    disk: &str,
    glance: &GlanceClient,
) -> anyhow::Result<(f64, uuid::Uuid)> {
    let started = Instant::now();
    let image = glance
        .create_image(&NewImage::raw("snapq-bench-bare"))
        .await?;
    let id = image.id.to_string();
    let (vms2, images2, disk2, id2) = (vms.clone(), images.clone(), disk.to_string(), id.clone());
    run_blocking(move || {
        let mut source = vms2.open(&disk2)?;
        source.create_snap("bench")?;
        let features = source.features()?;
        images2.clone_from(&vms2, &disk2, "bench", &id2, features)?;
        let mut clone = images2.open(&id2)?;
        clone.flatten(&mut |_, _| true)?;
        source.remove_snap("bench")?;
        clone.create_snap("snap")?;
        clone.protect_snap("snap")?;
        Ok(())
    })
    .await?;
    let location = format!("rbd://{}/{}/{}/snap", cluster.fsid(), images.name(), id);
    glance.add_location(image.id, &location).await?;
    glance
        .wait_active(
            image.id,
            Duration::from_secs(600),
            Duration::from_millis(50),
        )
        .await?;
    Ok((started.elapsed().as_secs_f64(), image.id))
}

/// Producer → queue → worker → Ceph → Glance, timed from before the Glance image is created
/// until the reply arrives. Returns (total seconds, seconds not spent inside steps, image id).
async fn through_snapq(
    producer: &Producer,
    glance: &GlanceClient,
    config: &BenchConfig,
    disk: &str,
) -> anyhow::Result<(f64, f64, Vec<f64>, uuid::Uuid)> {
    let started = Instant::now();
    let image = glance.create_image(&NewImage::raw("snapq-bench")).await?;
    let request = SnapshotRequest::new(
        DiskSpec::new(config.nova_pool.clone(), disk.to_string())?,
        image.id,
        "snapq-bench".into(),
    );
    let called = Instant::now();
    let reply = producer.call(request, Duration::from_secs(3600)).await?;
    let seconds = started.elapsed().as_secs_f64();
    let queued_seconds = called.elapsed().as_secs_f64();
    if let Some(failure) = reply.failure {
        bail!("snapq failed: {}", failure.message);
    }
    let result = reply.result.unwrap_or_default();
    let history = result["history"].as_array().cloned().unwrap_or_default();
    let in_steps: f64 = history.iter().filter_map(|e| e["seconds"].as_f64()).sum();
    // What the queue adds: the call's time minus the time inside the steps.
    Ok((
        seconds,
        queued_seconds - in_steps,
        hop_gaps_ms(&history),
        image.id,
    ))
}

/// From each step's end to the next step's start, in ms. History entries are written when a
/// step ends (`at_ms`, whole milliseconds) and say how long it ran (`seconds`).
fn hop_gaps_ms(history: &[serde_json::Value]) -> Vec<f64> {
    let spans: Vec<(f64, f64)> = history
        .iter()
        .filter_map(|e| {
            let end = e["at_ms"].as_f64()?;
            Some((end - e["seconds"].as_f64()? * 1000.0, end))
        })
        .collect();
    spans
        .windows(2)
        .map(|pair| (pair[1].0 - pair[0].1).max(0.0))
        .collect()
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn print_table(config: &BenchConfig, m: &Measured) {
    let bare = median(&m.bare);
    let snapq = median(&m.snapq);
    println!();
    println!(
        "disk {} GiB, {} MiB written, {} run(s) each, medians",
        config.disk_gib, config.written_mib, config.runs
    );
    println!("{:<44} {:>10} {:>10}", "path", "seconds", "ratio");
    println!(
        "{:<44} {:>10.2} {:>10.2}",
        "bare direct (librbd + Glance, no queue)", bare, 1.0
    );
    println!(
        "{:<44} {:>10.2} {:>10.2}",
        "snapq direct (producer, queue, worker)",
        snapq,
        snapq / bare
    );
    println!(
        "queue overhead per checkpoint hop: {:.1} ms median, {:.1} ms worst of {} \
         (a step's end to the next step's start: publish, confirm, ack, delivery, lease)",
        median(&m.hop_ms),
        m.hop_ms.iter().copied().fold(f64::NAN, f64::max),
        m.hop_ms.len()
    );
    println!(
        "call overhead per step: {:.1} ms (the whole call minus time inside steps, / 5; \
         adds the request's publish, the first lease and the reply)",
        median(&m.overhead_per_step_ms)
    );
    println!(
        "all runs: bare {:?}  snapq {:?}",
        rounded(&m.bare),
        rounded(&m.snapq)
    );
}

fn rounded(values: &[f64]) -> Vec<f64> {
    values.iter().map(|v| (v * 100.0).round() / 100.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hop_gaps_run_from_one_steps_end_to_the_next_steps_start() {
        let history = [
            json!({"step": "a", "at_ms": 1_000, "seconds": 0.5}),
            json!({"step": "b", "at_ms": 1_204, "seconds": 0.2}),
            json!({"step": "c", "at_ms": 2_000, "seconds": 0.79}),
        ];
        assert_eq!(hop_gaps_ms(&history), vec![4.0, 6.0]);
    }
}
