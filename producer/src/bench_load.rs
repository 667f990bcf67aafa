//! `snapq bench --load N`: N snapshot calls published at once against one worker, then
//! against two (`--workers 1,2`), each batch on disks of its own (1 GiB with 64 MiB written
//! by default) and on a topic of its own. This command starts the `snapq-worker` processes
//! itself (and a dead-letter worker, so a job that falls back is still answered, and
//! counted), with this environment's settings; secrets reach them only through their
//! environment. It prints, per worker count: jobs, fallbacks, failures, jobs/min and the
//! time from a call's publish to its reply (the image is active then) at p50, p90 and max.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::future::join_all;
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use snapq_common::amqp::{Topology, TopologyConfig};
use snapq_common::glance::{GlanceClient, NewImage};
use snapq_common::message::{DiskSpec, SnapshotRequest};
use snapq_common::rbd::{run_blocking, Cluster, Pool, RbdError};
use tokio::process::{Child, Command};

use crate::bench::{make_disk, BenchConfig, EXTENT, MIB};
use crate::Producer;

/// What `--load` runs.
pub struct LoadBench {
    /// Jobs published at once in each batch.
    pub jobs: usize,
    /// Worker counts, one batch each, in order.
    pub workers: Vec<usize>,
    pub disk_gib: u64,
    pub written_mib: u64,
    /// The `snapq-worker` binary.
    pub worker_binary: PathBuf,
    /// Where the workers' logs go.
    pub log_dir: PathBuf,
    /// Settings the workers get on top of this process's environment (none secret but
    /// `SNAPQ_AMQP_URL`, which only ever travels in the environment).
    pub worker_env: Vec<(String, String)>,
    /// How long one batch may take.
    pub timeout: Duration,
}

/// One batch's measurements.
struct Row {
    workers: usize,
    jobs: usize,
    fallbacks: usize,
    failed: usize,
    seconds: f64,
    /// Publish to reply, per answered call, sorted.
    latencies: Vec<f64>,
}

pub async fn run(
    config: BenchConfig,
    load: LoadBench,
    cluster: Cluster,
    glance: GlanceClient,
) -> anyhow::Result<()> {
    if load.jobs == 0 || load.workers.is_empty() || load.workers.contains(&0) {
        bail!("--load needs at least one job and --workers at least one worker per batch");
    }
    if !load.worker_binary.exists() {
        bail!(
            "{} is missing: build it (cargo build --release -p snapq-worker) or name it with \
             --worker-bin",
            load.worker_binary.display()
        );
    }
    std::fs::create_dir_all(&load.log_dir)
        .with_context(|| format!("creating {}", load.log_dir.display()))?;
    let vms = cluster.pool(&config.nova_pool)?;
    let image_pool = cluster.pool(&config.glance_pool)?;
    eprintln!(
        "{} jobs per batch on {} GiB disks with {} MiB written; worker logs in {}",
        load.jobs,
        load.disk_gib,
        load.written_mib,
        load.log_dir.display()
    );
    let mut rows = Vec::new();
    for &workers in &load.workers {
        rows.push(batch(&config, &load, &vms, &image_pool, &glance, workers).await?);
    }
    print_table(&rows);
    Ok(())
}

/// One batch against `workers` fresh workers on a topic of its own.
async fn batch(
    config: &BenchConfig,
    load: &LoadBench,
    vms: &Pool,
    image_pool: &Pool,
    glance: &GlanceClient,
    workers: usize,
) -> anyhow::Result<Row> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let topology = Topology::new(TopologyConfig {
        topic: format!(
            "{}-load-{workers}w-{}",
            config.topology.config.topic,
            &id[..8]
        ),
        ..config.topology.config.clone()
    });
    let disks: Vec<String> = (0..load.jobs)
        .map(|_| format!("{}_disk", uuid::Uuid::new_v4()))
        .collect();
    let mut images = Vec::new();
    let mut processes = Vec::new();
    let outcome = async {
        eprintln!("{workers} worker(s): creating {} disks", load.jobs);
        let made: Vec<anyhow::Result<()>> = join_all(disks.iter().map(|disk| {
            make_disk(
                vms,
                disk,
                load.disk_gib * 1024 * MIB,
                load.written_mib * MIB / EXTENT,
            )
        }))
        .await;
        made.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        let mut requests = Vec::new();
        for (i, disk) in disks.iter().enumerate() {
            let name = format!("snapq-bench-load-{i}");
            let image = glance.create_image(&NewImage::raw(name.clone())).await?;
            images.push(image.id);
            requests.push(SnapshotRequest::new(
                DiskSpec::new(config.nova_pool.clone(), disk.clone())?,
                image.id,
                name,
            ));
        }
        // The producer declares the topology; the workers find it there.
        let producer = Producer::connect(&config.amqp_url, topology.clone()).await?;
        for i in 0..workers {
            processes.push(spawn_worker(load, &topology, &format!("w{i}"), "work")?);
        }
        processes.push(spawn_worker(load, &topology, "dead-letter", "dead-letter")?);
        wait_consumers(&producer, &topology, workers).await?;

        eprintln!(
            "{workers} worker(s): publishing {} calls at once",
            load.jobs
        );
        let started = Instant::now();
        let answers = join_all(requests.into_iter().map(|request| async {
            let called = Instant::now();
            let reply = producer.call(request, load.timeout).await;
            (reply, called.elapsed().as_secs_f64())
        }))
        .await;
        let seconds = started.elapsed().as_secs_f64();
        producer.close().await;
        let mut row = Row {
            workers,
            jobs: load.jobs,
            fallbacks: 0,
            failed: 0,
            seconds,
            latencies: Vec::new(),
        };
        for (reply, latency) in answers {
            match reply {
                Ok(reply) if reply.failure.is_none() => {
                    let result = reply.result.unwrap_or_default();
                    if result["method"].as_str() != Some("direct") {
                        row.fallbacks += 1;
                    }
                    row.latencies.push(latency);
                }
                Ok(reply) => {
                    row.failed += 1;
                    eprintln!(
                        "a job failed: {}",
                        reply.failure.map(|f| f.message).unwrap_or_default()
                    );
                }
                Err(e) => {
                    row.failed += 1;
                    eprintln!("a call got no reply: {e}");
                }
            }
        }
        row.latencies.sort_by(f64::total_cmp);
        anyhow::Ok(row)
    }
    .await;
    for process in &mut processes {
        stop(process).await;
    }
    clean_up(config, vms, image_pool, glance, &topology, &images, &disks).await;
    outcome
}

/// Starts `snapq-worker` in `role` on `topology`: this process's environment, the bench's
/// settings, the topic. Its output goes to `<log_dir>/<topic>-<name>.log`.
fn spawn_worker(
    load: &LoadBench,
    topology: &Topology,
    name: &str,
    role: &str,
) -> anyhow::Result<Child> {
    let log = load
        .log_dir
        .join(format!("{}-{name}.log", topology.config.topic));
    let file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut command = Command::new(&load.worker_binary);
    command
        .envs(
            load.worker_env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .env("SNAPQ_TOPIC", &topology.config.topic)
        .env("SNAPQ_ROLE", role)
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .kill_on_drop(true);
    // The broker URL is in `worker_env`; a file naming it too would conflict.
    command.env_remove("SNAPQ_AMQP_URL_FILE");
    command
        .spawn()
        .with_context(|| format!("starting {}", load.worker_binary.display()))
}

/// Waits until `workers` consumers serve the work queue and one the dead-letter queue.
async fn wait_consumers(
    producer: &Producer,
    topology: &Topology,
    workers: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut ready = true;
        for (queue, wanted) in [
            (&topology.work_queue, workers),
            (&topology.dead_letter_queue, 1),
        ] {
            let declared = producer
                .channel()
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .context("looking at the work queue")?;
            ready &= declared.consumer_count() as usize >= wanted;
        }
        if ready {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the workers did not start consuming within 60 s; see their logs");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERM, then SIGKILL if the worker has not exited within a minute.
async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    if tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// Removes what the batch made, best effort (a failed batch may leave unfinished jobs):
/// the Glance images, snapq's clones of jobs Glance never took over, the disks with their
/// snapshots, the jobs' lease objects and the topology's queues. Problems are printed.
async fn clean_up(
    config: &BenchConfig,
    vms: &Pool,
    image_pool: &Pool,
    glance: &GlanceClient,
    topology: &Topology,
    images: &[uuid::Uuid],
    disks: &[String],
) {
    // Deleting an image Glance is still hashing races with the hashing (Glance's store may
    // then leave it half deleted): the hashes are waited for, a minute at most.
    join_all(images.iter().map(|id| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match glance.get_image(*id).await {
                Ok(r) if r.is_active() && r.os_hash_value.is_none() => {}
                _ => break,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if let Err(e) = glance.delete_image(*id).await {
            eprintln!("could not delete Glance image {id}: {e}");
        }
    }))
    .await;
    let (vms, image_pool) = (vms.clone(), image_pool.clone());
    let (disks, ids) = (disks.to_vec(), images.to_vec());
    let problems = run_blocking(move || {
        let mut problems = Vec::new();
        for id in &ids {
            // Glance removed the data of the images it served; what is left is snapq's.
            if let Err(e) = remove_with_snapshots(&image_pool, &id.to_string()) {
                problems.push(e.to_string());
            }
            match vms.remove_object(&format!("snapq_lease.{id}")) {
                Err(e) if !e.is_not_found() => problems.push(e.to_string()),
                _ => {}
            }
        }
        for disk in &disks {
            if let Err(e) = remove_with_snapshots(&vms, disk) {
                problems.push(e.to_string());
            }
        }
        Ok(problems)
    })
    .await
    .unwrap_or_else(|e| vec![e.to_string()]);
    for problem in problems {
        eprintln!("clean-up: {problem}");
    }
    // The broker may be restarting: a few tries.
    for attempt in 0..3 {
        match Producer::connect(&config.amqp_url, topology.clone()).await {
            Ok(producer) => {
                for queue in topology.all_queues() {
                    let _ = producer
                        .channel()
                        .queue_delete(queue.into(), QueueDeleteOptions::default())
                        .await;
                }
                producer.close().await;
                return;
            }
            Err(e) if attempt == 2 => {
                eprintln!(
                    "could not delete the queues of {}: {e}",
                    topology.work_queue
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(5)).await,
        }
    }
}

/// Removes `pool/name`, if there, with its snapshots.
fn remove_with_snapshots(pool: &Pool, name: &str) -> Result<(), RbdError> {
    if !pool.image_exists(name)? {
        return Ok(());
    }
    let mut image = pool.open(name)?;
    for snap in image.snapshots()? {
        if image.is_snap_protected(&snap.name)? {
            image.unprotect_snap(&snap.name)?;
        }
        image.remove_snap(&snap.name)?;
    }
    drop(image);
    pool.remove_image(name)
}

/// The `p` quantile (nearest rank) of sorted `values`.
fn quantile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let rank = (values.len() as f64 * p).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:>7} {:>5} {:>9} {:>6} {:>9} {:>9} {:>12} {:>12} {:>12}",
        "workers",
        "jobs",
        "fallbacks",
        "failed",
        "seconds",
        "jobs/min",
        "active p50 s",
        "active p90 s",
        "active max s"
    );
    for row in rows {
        let answered = row.jobs - row.failed;
        println!(
            "{:>7} {:>5} {:>9} {:>6} {:>9.1} {:>9.1} {:>12.2} {:>12.2} {:>12.2}",
            row.workers,
            row.jobs,
            row.fallbacks,
            row.failed,
            row.seconds,
            answered as f64 * 60.0 / row.seconds,
            quantile(&row.latencies, 0.5),
            quantile(&row.latencies, 0.9),
            row.latencies.last().copied().unwrap_or(f64::NAN),
        );
    }
    println!(
        "time to active: from a call's publish to its reply (sent once the image is active); \
         jobs/min: answered jobs over the batch's wall time"
    );
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_are_nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(quantile(&v, 0.5), 5.0);
        assert_eq!(quantile(&v, 0.9), 9.0);
        assert_eq!(quantile(&v[..1], 0.9), 1.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
