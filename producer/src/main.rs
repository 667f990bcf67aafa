//! `snapq`: asks the workers for an instance snapshot.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use snapq_common::amqp::Topology;
use snapq_common::cloud::glance_client;
use snapq_common::config::{AmqpArgs, CephArgs, GlanceArgs};
use snapq_common::glance::NewImage;
use snapq_common::message::{validate_glance_image_name, DiskSpec, SnapshotRequest};
use snapq_producer::Producer;

#[derive(Debug, Parser)]
#[command(
    name = "snapq",
    version,
    about = "Snapshots Ceph RBD instance disks into Glance images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Request a snapshot of an instance disk.
    Snapshot(SnapshotArgs),
    /// Time snapq's direct path beside the same operations done bare (needs a running worker),
    /// or (--load N) N jobs at once against 1 and 2 workers it starts itself.
    Bench(BenchArgs),
    /// Inspect, replay or purge parked jobs.
    Jobs(JobsArgs),
}

#[derive(Debug, clap::Args)]
struct JobsArgs {
    #[command(subcommand)]
    action: JobsAction,
    #[command(flatten)]
    amqp: AmqpArgs,
    #[command(flatten)]
    ceph: CephArgs,
}

#[derive(Debug, Subcommand)]
enum JobsAction {
    /// Parked jobs: id, disk, image, reason, when, attempts.
    List,
    /// One parked job, whole.
    Show { id: String },
    /// Send parked jobs back with a fresh attempt budget.
    Replay {
        /// The job id (or use --all).
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
        /// `direct` (the fast path again) or `fallback` (straight to the full copy).
        #[arg(long, default_value = "direct", value_parser = ["direct", "fallback"])]
        mode: String,
    },
    /// Drop a parked job for good, with what remains of it in Ceph (its own marked artefacts
    /// and its lease object; Glance is asked whether it uses the clone).
    Purge {
        id: String,
        #[command(flatten)]
        glance: Box<GlanceArgs>,
        /// Pool holding the workers' lease objects (as `snapq-worker --lease-pool`).
        #[arg(long, env = "SNAPQ_LEASE_POOL", default_value = "vms")]
        lease_pool: String,
        /// The workers' source policy (as `snapq-worker`): Ceph is not touched for a parked
        /// request naming a disk it forbids.
        #[command(flatten)]
        policy: snapq_worker::policy::PolicyArgs,
    },
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Virtual size of the benchmark disk.
    #[arg(long, default_value_t = 10)]
    disk_gib: u64,
    /// Data written to it, in 4 MiB extents spread over the disk.
    #[arg(long, default_value_t = 1024)]
    written_mib: u64,
    /// Runs of each path.
    #[arg(long, default_value_t = 2)]
    runs: u32,
    /// Benchmark the full-copy fallback (against `rbd export - | curl -T -`) instead of the
    /// direct path; needs a dead-letter worker.
    #[arg(long)]
    fallback: bool,
    /// Pid of the dead-letter worker, to report its peak memory.
    #[arg(long)]
    worker_pid: Option<u32>,
    /// Load benchmark: N jobs published at once against 1 worker, then against 2 (see
    /// --workers); starts the workers itself (settings from this environment).
    #[arg(long, value_name = "N", conflicts_with = "fallback")]
    load: Option<usize>,
    /// With --load: the worker counts to run a batch against, in order.
    #[arg(long, value_delimiter = ',', default_value = "1,2", requires = "load")]
    workers: Vec<usize>,
    /// With --load: virtual size of each disk.
    #[arg(long, default_value_t = 1, requires = "load")]
    load_disk_gib: u64,
    /// With --load: data written to each disk, in 4 MiB extents.
    #[arg(long, default_value_t = 64, requires = "load")]
    load_written_mib: u64,
    /// With --load: seconds one batch may take.
    #[arg(long, default_value_t = 600, requires = "load")]
    load_timeout: u64,
    /// With --load: the snapq-worker binary [default: beside this one].
    #[arg(long, requires = "load")]
    worker_bin: Option<std::path::PathBuf>,
    /// With --load: where the workers' logs go [default: <temp dir>/snapq-bench-load].
    #[arg(long, requires = "load")]
    log_dir: Option<std::path::PathBuf>,
    /// Pool of the instance disks.
    #[arg(long, env = "SNAPQ_NOVA_POOL", default_value = "vms")]
    nova_pool: String,
    #[command(flatten)]
    amqp: AmqpArgs,
    #[command(flatten)]
    glance: GlanceArgs,
    #[command(flatten)]
    ceph: CephArgs,
}

#[derive(Debug, clap::Args)]
struct SnapshotArgs {
    /// The instance disk, `pool/image`, e.g. vms/<instance uuid>_disk
    #[arg(long)]
    disk: String,
    /// Name of the Glance image.
    #[arg(long)]
    name: String,
    /// An existing queued Glance image to fill; created when absent.
    #[arg(long)]
    image_id: Option<uuid::Uuid>,
    /// Wait for the worker's result and print it.
    #[arg(long)]
    wait: bool,
    /// Seconds to wait with --wait.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
    #[command(flatten)]
    amqp: AmqpArgs,
    #[command(flatten)]
    glance: GlanceArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    snapq_common::logging::init("warn");
    match Cli::parse().command {
        Command::Snapshot(args) => snapshot(args).await,
        Command::Bench(args) => bench(args).await,
        Command::Jobs(args) => jobs(args).await,
    }
}

async fn snapshot(args: SnapshotArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let disk = DiskSpec::parse("--disk", &args.disk)?;
    validate_glance_image_name("--name", &args.name)?;
    let amqp_url = args.amqp.resolve()?;
    args.glance.config()?;
    let image_id = match args.image_id {
        Some(id) => id,
        None => {
            let glance = glance_client(&args.glance).await?;
            glance
                .create_image(&NewImage::raw(args.name.clone()))
                .await
                .context("creating the queued Glance image")?
                .id
        }
    };
    let request = SnapshotRequest::new(disk, image_id, args.name.clone());
    let amqp_ca = args.amqp.ca_pem()?;
    let producer = Producer::connect_with_ca(
        &amqp_url,
        Topology::new(args.amqp.topology()),
        amqp_ca.as_deref(),
    )
    .await?;
    println!("job {} image {}", request.unique_id, image_id);
    if !args.wait {
        producer.cast(&request).await?;
        producer.close().await;
        return Ok(());
    }
    let reply = producer
        .call(request, Duration::from_secs(args.timeout))
        .await?;
    producer.close().await;
    if let Some(failure) = reply.failure {
        bail!("snapshot failed: {}", failure.message);
    }
    let result = reply.result.unwrap_or_default();
    println!(
        "image {} {} by the {} path in {:.2} s (worker {:.2} s)",
        image_id,
        result["status"].as_str().unwrap_or("?"),
        result["method"].as_str().unwrap_or("?"),
        started.elapsed().as_secs_f64(),
        result["seconds"].as_f64().unwrap_or(f64::NAN),
    );
    Ok(())
}

async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let amqp_url = args.amqp.resolve()?;
    args.glance.config()?;
    let cluster = snapq_common::rbd::connect(
        args.ceph.config(),
        Duration::from_secs(args.ceph.connect_timeout_secs),
    )
    .await?;
    let glance = glance_client(&args.glance).await?;
    let load = args
        .load
        .map(|jobs| load_bench(&args, jobs, &amqp_url, glance.base_url()))
        .transpose()?;
    let config = snapq_producer::bench::BenchConfig {
        disk_gib: args.disk_gib,
        written_mib: args.written_mib,
        runs: args.runs,
        nova_pool: args.nova_pool,
        glance_pool: args.ceph.glance_pool.clone(),
        amqp_url,
        topology: Topology::new(args.amqp.topology()),
    };
    if let Some(load) = load {
        return snapq_producer::bench_load::run(config, load, cluster, glance).await;
    }
    if args.fallback {
        let extra = snapq_producer::bench_fallback::FallbackBench {
            glance_url: glance.base_url().to_string(),
            ceph_conf: args.ceph.conf.clone(),
            ceph_user: args.ceph.user.clone(),
            worker_pid: args.worker_pid,
        };
        return snapq_producer::bench_fallback::run(config, extra, cluster, glance).await;
    }
    snapq_producer::bench::run(config, cluster, glance).await
}

/// What `snapq bench --load` runs, and the settings its workers get: this command's (the
/// broker URL only through their environment), on top of the environment they inherit.
fn load_bench(
    args: &BenchArgs,
    jobs: usize,
    amqp_url: &str,
    glance_url: &str,
) -> anyhow::Result<snapq_producer::bench_load::LoadBench> {
    let worker_binary = match &args.worker_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("locating this executable")?
            .with_file_name("snapq-worker"),
    };
    let mut worker_env: Vec<(String, String)> = vec![
        ("SNAPQ_AMQP_URL".into(), amqp_url.to_string()),
        ("SNAPQ_EXCHANGE".into(), args.amqp.exchange.clone()),
        (
            "SNAPQ_EXCHANGE_DURABLE".into(),
            args.amqp.exchange_durable.to_string(),
        ),
        (
            "SNAPQ_DELIVERY_LIMIT".into(),
            args.amqp.delivery_limit.to_string(),
        ),
        ("SNAPQ_GLANCE_URL".into(), glance_url.to_string()),
        ("SNAPQ_CEPH_CONF".into(), args.ceph.conf.clone()),
        ("SNAPQ_CEPH_USER".into(), args.ceph.user.clone()),
        ("SNAPQ_GLANCE_POOL".into(), args.ceph.glance_pool.clone()),
    ];
    if let Some(file) = &args.glance.token_file {
        worker_env.push(("SNAPQ_GLANCE_TOKEN_FILE".into(), file.display().to_string()));
    }
    if std::env::var_os("SNAPQ_SOURCE_POOLS").is_none() {
        worker_env.push(("SNAPQ_SOURCE_POOLS".into(), args.nova_pool.clone()));
    }
    Ok(snapq_producer::bench_load::LoadBench {
        jobs,
        workers: args.workers.clone(),
        disk_gib: args.load_disk_gib,
        written_mib: args.load_written_mib,
        worker_binary,
        log_dir: args
            .log_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("snapq-bench-load")),
        worker_env,
        timeout: Duration::from_secs(args.load_timeout),
    })
}

async fn jobs(args: JobsArgs) -> anyhow::Result<()> {
    use snapq_producer::jobs::{self, ReplayMode};

    let amqp_url = args.amqp.resolve()?;
    let amqp_ca = args.amqp.ca_pem()?;
    let producer = Producer::connect_with_ca(
        &amqp_url,
        Topology::new(args.amqp.topology()),
        amqp_ca.as_deref(),
    )
    .await?;
    let (channel, topology) = (producer.channel().clone(), producer.topology().clone());
    let mut parked = jobs::take_all(&channel, &topology).await?;
    let outcome = async {
        match &args.action {
            JobsAction::List => {
                println!("{:<34} {:<50} {:<38} {:<18} {:>8} {:>8}", "job", "disk", "image", "reason", "age_s", "attempts");
                for job in &parked {
                    let (disk, image) = job.request.as_ref().map_or(("?".into(), "?".into()), |r| (r.disk.to_string(), r.image_id.to_string()));
                    let when = job.state.history.last().map(|h| h.at_ms).or(job.state.started_ms);
                    let age = when.map_or("?".into(), |at| (snapq_common::job::now_ms().saturating_sub(at) / 1000).to_string());
                    let attempts = job.state.history.len();
                    println!("{:<34} {:<50} {:<38} {:<18} {:>8} {:>8}", job.id(), disk, image, job.state.reason.as_deref().unwrap_or("?"), age, attempts);
                }
                println!("{} parked job(s)", parked.len());
            }
            JobsAction::Show { id } => {
                let job = parked.iter().find(|j| &j.id() == id).ok_or_else(|| anyhow::anyhow!("no parked job {id}"))?;
                println!("job:        {}", job.id());
                if let Some(r) = &job.request {
                    println!("disk:       {}\nimage:      {} ({})", r.disk, r.image_id, r.image_name);
                }
                println!("reason:     {}", job.state.reason.as_deref().unwrap_or("?"));
                println!("last error: {}", job.state.last_error.as_deref().unwrap_or(""));
                println!("replays:    {}", job.state.replays);
                println!("history:");
                for h in &job.state.history {
                    println!("  {} {:<24} {:<14} {:>8.3}s  {}", h.at_ms, h.step, h.did, h.seconds, h.worker);
                }
            }
            JobsAction::Replay { id, all, mode } => {
                let mode = if mode == "fallback" { ReplayMode::Fallback } else { ReplayMode::Direct };
                if id.is_none() && !all {
                    bail!("name a job id or use --all");
                }
                let cluster = snapq_common::rbd::connect(args.ceph.config(), Duration::from_secs(args.ceph.connect_timeout_secs)).await?;
                let chosen: Vec<_> = {
                    let (chosen, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut parked).into_iter().partition(|j| *all || Some(j.id()) == *id);
                    parked = rest;
                    chosen
                };
                if chosen.is_empty() {
                    bail!("no parked job {}", id.as_deref().unwrap_or(""));
                }
                let mut refused = 0;
                for job in chosen {
                    let job_id = job.id();
                    let Some(request) = job.request.clone() else {
                        eprintln!("{job_id}: not a valid request; it stays parked (purge it instead)");
                        refused += 1;
                        parked.push(job);
                        continue;
                    };
                    let (cluster2, disk) = (cluster.clone(), request.disk.clone());
                    let exists = snapq_common::rbd::run_blocking(move || cluster2.pool(&disk.pool)?.image_exists(&disk.image)).await;
                    match exists {
                        Ok(true) => {
                            jobs::replay(&channel, &topology, job, mode).await?;
                            println!("{job_id}: replayed ({mode:?})");
                        }
                        Ok(false) => {
                            eprintln!("{job_id}: cannot replay: the source disk {} no longer exists; it stays parked", request.disk);
                            refused += 1;
                            parked.push(job);
                        }
                        Err(e) => {
                            eprintln!("{job_id}: cannot check the source disk {}: {e}; it stays parked", request.disk);
                            refused += 1;
                            parked.push(job);
                        }
                    }
                }
                if refused > 0 {
                    bail!("{refused} job(s) could not be replayed");
                }
            }
            JobsAction::Purge { id, glance, lease_pool, policy } => {
                let index = parked.iter().position(|j| &j.id() == id).ok_or_else(|| anyhow::anyhow!("no parked job {id}"))?;
                if let Some(request) = parked[index].request.clone() {
                    let cluster = snapq_common::rbd::connect(args.ceph.config(), Duration::from_secs(args.ceph.connect_timeout_secs)).await?;
                    let target = snapq_worker::purge::PurgeTarget {
                        image_pool: cluster.pool(&args.ceph.glance_pool)?,
                        lease_pool: cluster.pool(lease_pool)?,
                        glance: glance_client(glance).await?,
                        policy: policy.policy(&args.ceph.glance_pool)?,
                        cluster,
                    };
                    let remaining = match snapq_worker::purge::remove_remains(&target, &request, id).await {
                        Err(snapq_worker::purge::PurgeError::NotAllowed(refusal)) => {
                            eprintln!("{id}: {refusal}; nothing in Ceph is touched for it");
                            Vec::new()
                        }
                        other => other?,
                    };
                    for spec in &remaining {
                        println!("{id}: kept {spec}: Glance uses it (or could not be asked)");
                    }
                }
                let job = parked.remove(index);
                jobs::purge(job).await?;
                println!("{id}: purged");
            }
        }
        anyhow::Ok(())
    }
    .await;
    jobs::put_back(parked).await;
    producer.close().await;
    outcome
}
