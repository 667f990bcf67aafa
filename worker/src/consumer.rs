//! The consumer loop: keeps a connection to the broker (reconnecting with backoff), takes
//! deliveries with bounded concurrency, and on shutdown stops taking new ones and gives the
//! running steps a grace period before closing (the broker then hands any unfinished
//! delivery to another worker; every step is idempotent, so nothing is lost).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use futures::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use snapq_common::amqp::{self, AmqpError};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::channels::Channels;
use crate::settings::{Role, WorkerSettings};
use crate::{dead_letter, work};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    #[error("the broker closed the consumer")]
    ConsumerClosed,
}

/// Consumes until `shutdown` resolves, then drains. Broker failures are retried forever with
/// backoff: a worker outlives broker restarts.
pub async fn run_worker(
    settings: WorkerSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let settings = Arc::new(settings);
    let mut jobs = JoinSet::new();
    let mut backoff = reconnect_backoff();
    loop {
        match consume(&settings, &mut jobs, stop.clone()).await {
            Ok(()) => break,
            Err(e) => {
                let delay = backoff.next().unwrap_or(Duration::from_secs(10));
                warn!(error = %e, delay_ms = delay.as_millis() as u64, "broker connection lost; reconnecting");
                let mut stop = stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        }
        if *stop.borrow() {
            break;
        }
    }
    drain(&settings, &mut jobs).await;
    Ok(())
}

fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

/// One connection's life: consume until stopped (Ok, after draining on this connection so
/// running jobs can still acknowledge) or until the connection fails (Err).
async fn consume(
    settings: &Arc<WorkerSettings>,
    jobs: &mut JoinSet<()>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let connection = amqp::connect_with_ca(
        &settings.amqp_url,
        &settings.name,
        settings.amqp_ca.as_deref(),
    )
    .await?;
    let channel = amqp::open_confirmed_channel(&connection).await?;
    amqp::declare_topology(&channel, &settings.topology).await?;
    if settings.notifications.enabled {
        amqp::declare_notification_queues(
            &channel,
            &settings.topology,
            &settings.notifications.topics,
        )
        .await?;
    }
    channel
        .basic_qos(settings.concurrency, BasicQosOptions::default())
        .await
        .map_err(|source| AmqpError::Broker {
            op: "set prefetch",
            source,
        })?;
    let consumer_tag = format!("{}-{}", settings.name, uuid::Uuid::new_v4().simple());
    let queue = match settings.role {
        Role::Work => settings.topology.work_queue.as_str(),
        Role::DeadLetter => settings.topology.dead_letter_queue.as_str(),
    };
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            consumer_tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|source| AmqpError::Broker {
            op: "consume",
            source,
        })?;
    info!(queue, role = ?settings.role, concurrency = settings.concurrency, "worker consuming");
    let channels = Arc::new(Channels::new(connection, channel));
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            Some(finished) = jobs.join_next(), if !jobs.is_empty() => log_join(finished),
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let (settings, channels) = (settings.clone(), channels.clone());
                    jobs.spawn(async move {
                        match settings.role {
                            Role::Work => work::handle(&settings, &channels, delivery).await,
                            Role::DeadLetter => dead_letter::handle(&settings, &channels, delivery).await,
                        }
                    });
                }
                Some(Err(source)) => return Err(AmqpError::Broker { op: "receive", source }.into()),
                None => return Err(WorkerError::ConsumerClosed),
            },
        }
    }
    info!("shutdown requested: taking no new jobs");
    let _ = channels
        .consume
        .basic_cancel(consumer_tag.as_str().into(), BasicCancelOptions::default())
        .await;
    drain(settings, jobs).await;
    let _ = channels
        .connection()
        .close(200, "worker stopping".into())
        .await;
    Ok(())
}

/// Waits for running jobs, at most the shutdown grace period.
async fn drain(settings: &WorkerSettings, jobs: &mut JoinSet<()>) {
    if jobs.is_empty() {
        return;
    }
    info!(
        running = jobs.len(),
        grace_s = settings.shutdown_grace.as_secs(),
        "waiting for running steps"
    );
    let waited = tokio::time::timeout(settings.shutdown_grace, async {
        while let Some(finished) = jobs.join_next().await {
            log_join(finished);
        }
    })
    .await;
    if waited.is_err() {
        warn!(
            running = jobs.len(),
            "grace period over; unfinished deliveries go back to the queue"
        );
        jobs.abort_all();
        // Reap the cancelled tasks; their deliveries return to the queue with the connection.
        while jobs.join_next().await.is_some() {}
    }
}

fn log_join(finished: Result<(), tokio::task::JoinError>) {
    if let Err(e) = finished {
        error!(error = %e, "job task failed");
    }
}
