//! The consumer loop: takes requests off the work queue with bounded concurrency, runs each
//! job, and acknowledges a delivery only once its image is `active` (or the job was handed to
//! the dead-letter queue).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Channel;
use snapq_common::amqp::{self, Topology};
use snapq_common::glance::GlanceClient;
use snapq_common::message::SnapshotRequest;
use snapq_common::rbd::{Cluster, Pool};
use tokio::task::JoinSet;
use tracing::{error, info, info_span, warn, Instrument};

use crate::context::JobContext;
use crate::error::{Disposition, JobError};
use crate::steps::Step;
use crate::{cleanup, pipeline, reply};

/// What a worker needs, already connected where connecting is slow.
#[derive(Clone)]
pub struct WorkerSettings {
    pub amqp_url: String,
    pub topology: Topology,
    pub cluster: Cluster,
    pub image_pool: Pool,
    pub glance: GlanceClient,
    /// Jobs run at once by this worker (also the prefetch count).
    pub concurrency: u16,
    pub active_timeout: Duration,
    /// Name shown in RabbitMQ's connection list.
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Amqp(#[from] amqp::AmqpError),
    #[error("the broker closed the consumer")]
    ConsumerClosed,
}

/// Consumes until `shutdown` resolves, then stops taking new jobs and waits for the running
/// ones to finish.
pub async fn run_worker(
    settings: WorkerSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let connection = amqp::connect(&settings.amqp_url, &settings.name).await?;
    let channel = amqp::open_confirmed_channel(&connection).await?;
    amqp::declare_topology(&channel, &settings.topology).await?;
    channel
        .basic_qos(settings.concurrency, BasicQosOptions::default())
        .await
        .map_err(amqp_err("set prefetch"))?;
    let consumer_tag = format!("{}-{}", settings.name, uuid::Uuid::new_v4().simple());
    let mut consumer = channel
        .basic_consume(
            settings.topology.work_queue.as_str().into(),
            consumer_tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(amqp_err("consume"))?;
    info!(queue = %settings.topology.work_queue, concurrency = settings.concurrency, "worker consuming");

    let settings = Arc::new(settings);
    let mut jobs = JoinSet::new();
    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            Some(finished) = jobs.join_next(), if !jobs.is_empty() => {
                if let Err(e) = finished {
                    error!(error = %e, "job task failed");
                }
            }
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let (settings, channel) = (settings.clone(), channel.clone());
                    jobs.spawn(async move { handle_delivery(&settings, &channel, delivery).await });
                }
                Some(Err(e)) => break Err(WorkerError::Amqp(amqp::AmqpError::Broker { op: "receive", source: e })),
                None => break Err(WorkerError::ConsumerClosed),
            },
        }
    };
    info!(
        running = jobs.len(),
        "stopping: no new jobs; waiting for running jobs"
    );
    let _ = channel
        .basic_cancel(consumer_tag.as_str().into(), BasicCancelOptions::default())
        .await;
    while let Some(finished) = jobs.join_next().await {
        if let Err(e) = finished {
            error!(error = %e, "job task failed");
        }
    }
    let _ = connection.close(200, "worker stopping".into()).await;
    result
}

fn amqp_err(op: &'static str) -> impl FnOnce(lapin::Error) -> amqp::AmqpError {
    move |source| amqp::AmqpError::Broker { op, source }
}

/// How often the broker has delivered this message before (0 on the first delivery).
fn delivery_count(delivery: &Delivery) -> u32 {
    let Some(headers) = delivery.properties.headers() else {
        return 0;
    };
    match headers.inner().get("x-delivery-count") {
        Some(AMQPValue::LongLongInt(n)) => (*n).try_into().unwrap_or(0),
        Some(AMQPValue::LongInt(n)) => (*n).try_into().unwrap_or(0),
        Some(AMQPValue::ShortInt(n)) => (*n).try_into().unwrap_or(0),
        _ => 0,
    }
}

async fn handle_delivery(settings: &WorkerSettings, channel: &Channel, delivery: Delivery) {
    let request = match SnapshotRequest::decode(&delivery.data) {
        Ok(request) => request,
        Err(e) => {
            // Nothing can make this message valid: dead-letter it at once, untouched.
            error!(error = %e, field = e.field(), "rejecting malformed request");
            nack(&delivery, false).await;
            return;
        }
    };
    let span = info_span!("job", job_id = %request.unique_id, image_id = %request.image_id, disk = %request.disk);
    async {
        let attempt = delivery_count(&delivery) + 1;
        info!(attempt, "job started");
        match run_job(settings, &request).await {
            Ok(outcome) => {
                info!(seconds = outcome.elapsed.as_secs_f64(), method = outcome.method.name(), "job done: image is active");
                reply::send(channel, &request, Some(reply::success_result(&request, &outcome)), None).await;
                ack(&delivery).await;
            }
            Err(e) => {
                let disposition = e.disposition();
                match disposition {
                    Disposition::Retry if attempt < settings.topology.config.delivery_limit => {
                        let delay = retry_delay(attempt);
                        warn!(error = %e, attempt, delay_ms = delay.as_millis() as u64, "transient failure; will retry");
                        tokio::time::sleep(delay).await;
                        nack(&delivery, true).await;
                    }
                    _ => {
                        error!(error = %e, ?disposition, "job failed; cleaning up and dead-lettering it");
                        if let Ok(ctx) = context(settings, &request) {
                            if let Err(cleanup_error) = cleanup::remove_partial_state(&ctx).await {
                                error!(error = %cleanup_error, "cleanup failed; the dead-letter consumer will retry it");
                            }
                        }
                        reply::send(channel, &request, None, Some(reply::failure(&e))).await;
                        nack(&delivery, false).await;
                    }
                }
            }
        }
    }
    .instrument(span)
    .await
}

fn context(settings: &WorkerSettings, request: &SnapshotRequest) -> Result<JobContext, JobError> {
    JobContext::new(
        request,
        &settings.cluster,
        &settings.image_pool,
        &settings.glance,
        settings.active_timeout,
    )
}

async fn run_job(
    settings: &WorkerSettings,
    request: &SnapshotRequest,
) -> Result<pipeline::JobOutcome, JobError> {
    let ctx = context(settings, request)?;
    pipeline::run_from(&ctx, Step::SnapshotSource).await
}

/// Exponential backoff with jitter for transient failures.
fn retry_delay(attempt: u32) -> Duration {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt.saturating_sub(1) as usize)
        .unwrap_or(Duration::from_secs(30))
}

async fn ack(delivery: &Delivery) {
    if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
        // The broker will redeliver; the job's steps are idempotent.
        warn!(error = %e, "ack failed; the job will be redelivered");
    }
}

async fn nack(delivery: &Delivery, requeue: bool) {
    if let Err(e) = delivery
        .nack(BasicNackOptions {
            requeue,
            multiple: false,
        })
        .await
    {
        warn!(error = %e, requeue, "nack failed; the broker will redeliver the job");
    }
}
