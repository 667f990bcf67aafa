//! `snapq-worker`: consumes snapshot requests from RabbitMQ.

#![forbid(unsafe_code)]

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use snapq_common::amqp::Topology;
use snapq_common::cloud::glance_client;
use snapq_common::config::{AmqpArgs, CephArgs, GlanceArgs};
use snapq_worker::settings::{LostImport, LostImportAction, NotificationSettings};
use snapq_worker::{run_worker, Role, WorkerSettings};

#[derive(Debug, Parser)]
#[command(
    name = "snapq-worker",
    version,
    about = "Turns RBD instance disks into Glance images inside Ceph"
)]
struct Args {
    #[command(flatten)]
    amqp: AmqpArgs,
    #[command(flatten)]
    ceph: CephArgs,
    #[command(flatten)]
    glance: GlanceArgs,
    /// Queue to serve: `work` (the fast path) or `dead-letter` (cleanup, full-copy fallback,
    /// parking lot).
    #[arg(long, env = "SNAPQ_ROLE", default_value = "work", value_parser = parse_role)]
    role: Role,
    /// Jobs run at once by this worker.
    #[arg(long, env = "SNAPQ_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
    /// Seconds one delivery waits for Glance to make a registered image active; a longer
    /// import is checkpointed and waited for again (it is never registered twice).
    #[arg(long, env = "SNAPQ_ACTIVE_TIMEOUT", default_value_t = 120)]
    active_timeout: u64,
    /// What to do when Glance lost the job's location import (a Glance restart loses the
    /// imports it had queued, and their lock holds the image for 60-120 minutes): `copy`
    /// makes the image by a full copy, `wait` waits for Glance to let the lock expire.
    #[arg(long, env = "SNAPQ_LOST_IMPORT", default_value = "copy", value_parser = parse_lost_import)]
    lost_import: LostImportAction,
    /// oslo notification driver: `messagingv2` publishes snapq.snapshot.start/.end/.error on
    /// the control exchange; `noop` (oslo's default) publishes nothing.
    #[arg(long, env = "SNAPQ_NOTIFICATION_DRIVER", default_value = "noop", value_parser = ["messagingv2", "noop"])]
    notification_driver: String,
    /// oslo notification topics (comma-separated), as [oslo_messaging_notifications] topics.
    #[arg(
        long,
        env = "SNAPQ_NOTIFICATION_TOPICS",
        default_value = "notifications",
        value_delimiter = ','
    )]
    notification_topics: Vec<String>,
    /// Seconds a Glance task queued after the job's must have run ahead of it before the
    /// job's import counts as lost.
    #[arg(long, env = "SNAPQ_LOST_IMPORT_AFTER", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    lost_import_after: u64,
    /// Seconds one delivery waits for a flatten before checkpointing its progress (keep well
    /// under RabbitMQ's consumer_timeout, 30 min by default).
    #[arg(long, env = "SNAPQ_FLATTEN_HOLD", default_value_t = 300)]
    flatten_hold: u64,
    /// Clones whose source disk holds less than this many GiB are flattened by the worker
    /// itself (fastest); bigger ones by a Ceph manager task (survives the worker, polled).
    #[arg(long, env = "SNAPQ_FLATTEN_IN_PROCESS_BELOW_GIB", default_value_t = 16)]
    flatten_in_process_below_gib: u64,
    /// fsid of the cluster Glance's rbd store uses; jobs for disks in another cluster go
    /// straight to the full copy. Unset: Glance's store is taken to be this cluster.
    #[arg(long, env = "SNAPQ_GLANCE_STORE_FSID")]
    glance_store_fsid: Option<String>,
    /// Seconds a job's lease lasts without renewal (it is renewed every third of that).
    #[arg(long, env = "SNAPQ_LEASE_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(3..=3600))]
    lease_seconds: u64,
    /// Attempts at one step before a transient failure dead-letters the job.
    #[arg(long, env = "SNAPQ_MAX_ATTEMPTS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    max_attempts: u32,
    /// Seconds running steps may take to finish after SIGTERM.
    #[arg(long, env = "SNAPQ_SHUTDOWN_GRACE", default_value_t = 60)]
    shutdown_grace: u64,
    #[command(flatten)]
    policy: snapq_worker::policy::PolicyArgs,
    /// Pool holding the jobs' lease objects (one per Glance image, whatever pool a request
    /// names); the worker's Ceph user must be able to write it. Default: the first source pool.
    #[arg(long, env = "SNAPQ_LEASE_POOL")]
    lease_pool: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    snapq_common::logging::init("info,lapin=warn");
    let args = Args::parse();
    // A renewal due a third into the lease must return before the lease runs out, so no Ceph
    // call may take more than half of it.
    if args.ceph.op_timeout_secs.saturating_mul(2) > args.lease_seconds {
        anyhow::bail!(
            "--ceph-op-timeout ({} s) must be at most half of --lease-seconds ({} s)",
            args.ceph.op_timeout_secs,
            args.lease_seconds
        );
    }
    let source_policy = args.policy.policy(&args.ceph.glance_pool)?;
    // Secrets first: a refused setting must not wait for Ceph.
    let amqp_url = args.amqp.resolve()?;
    let amqp_ca = args.amqp.ca_pem()?;
    // `<topic>.<word>` routes to the work queue (oslo's topic.server), so `<topic>.info`
    // notifications would come back in as requests.
    if args
        .notification_topics
        .iter()
        .any(|t| t.trim() == args.amqp.topic)
    {
        anyhow::bail!(
            "--notification-topics (SNAPQ_NOTIFICATION_TOPICS) must not contain snapq's own topic '{}' (--topic): its notifications would be routed to the work queue",
            args.amqp.topic
        );
    }
    args.glance.config()?;
    if !snapq_common::rbd::return_large_frees_to_the_os() {
        tracing::warn!("the allocator refused a fixed mmap threshold; memory may stay higher");
    }
    let cluster = snapq_common::rbd::connect(
        args.ceph.config(),
        Duration::from_secs(args.ceph.connect_timeout_secs),
    )
    .await
    .context("connecting to Ceph")?;
    let image_pool = cluster
        .pool(&args.ceph.glance_pool)
        .context("opening Glance's pool")?;
    let lease_pool_name = args
        .lease_pool
        .clone()
        .unwrap_or_else(|| source_policy.pools()[0].clone());
    let lease_pool = cluster
        .pool(&lease_pool_name)
        .with_context(|| format!("opening the lease pool (--lease-pool {lease_pool_name})"))?;
    let glance = glance_client(&args.glance)
        .await
        .context("connecting to Glance")?;
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    let settings = WorkerSettings {
        role: args.role,
        amqp_url,
        amqp_ca,
        topology: Topology::new(args.amqp.topology()),
        cluster,
        image_pool,
        glance,
        concurrency: args.concurrency,
        active_timeout: Duration::from_secs(args.active_timeout),
        notifications: NotificationSettings {
            enabled: args.notification_driver == "messagingv2",
            topics: args
                .notification_topics
                .iter()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect(),
            publisher_id: format!("snapq.{host}"),
        },
        lost_import: LostImport {
            action: args.lost_import,
            after: Duration::from_secs(args.lost_import_after),
        },
        flatten_hold: Duration::from_secs(args.flatten_hold),
        flatten_in_process_below: args.flatten_in_process_below_gib.saturating_mul(1 << 30),
        glance_store_fsid: args.glance_store_fsid.clone(),
        lease_duration: Duration::from_secs(args.lease_seconds),
        max_attempts: args.max_attempts,
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        source_policy,
        lease_pool,
        name: format!("snapq-worker:{host}:{}", std::process::id()),
    };
    run_worker(settings, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown requested");
}

fn parse_lost_import(s: &str) -> Result<LostImportAction, String> {
    match s {
        "copy" => Ok(LostImportAction::Copy),
        "wait" => Ok(LostImportAction::Wait),
        other => Err(format!("expected copy or wait, got '{other}'")),
    }
}

fn parse_role(s: &str) -> Result<Role, String> {
    match s {
        "work" => Ok(Role::Work),
        "dead-letter" => Ok(Role::DeadLetter),
        other => Err(format!("expected work or dead-letter, got '{other}'")),
    }
}
