//! Step 3: flatten the clone so it no longer depends on the instance disk.
//!
//! A clone with little data (under `flatten_in_process_below` bytes allocated in the source)
//! is flattened by librbd in a blocking thread: that is the fastest way (the manager's task
//! measured ~15 % slower here) and it ends well within one delivery.
//!
//! A bigger one is flattened by a Ceph manager task (`rbd task add flatten`), as ceph-csi
//! does: Ceph carries on if the worker dies, and the worker only polls, so a long flatten
//! neither occupies a thread nor holds a delivery for long. The step polls for at most the
//! job's *flatten hold*; if the flatten is not done by then it returns `FlattenInProgress`, the
//! job is checkpointed with its progress and comes back through a retry tier to poll again. A
//! cluster whose manager cannot run the task gets the in-process flatten instead.

use std::time::{Duration, Instant};

use serde_json::json;
use snapq_common::rbd::run_blocking;
use tracing::{info, warn, Span};

use super::StepReport;
use crate::context::JobContext;
use crate::error::JobError;

const POLL_INTERVAL: Duration = Duration::from_millis(100);
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

pub async fn ensure(ctx: &JobContext) -> Result<StepReport, JobError> {
    // Only this job's own clone is flattened (and so made to hold a copy of the disk).
    ctx.require_own_clone().await?;
    let Some(allocated) = parent_allocated_bytes(ctx).await? else {
        return Ok(StepReport::AlreadyDone);
    };
    if allocated < ctx.flatten_in_process_below {
        return flatten_in_process(ctx).await;
    }
    let spec = ctx.names.image_spec();
    let cluster = ctx.cluster.clone();
    let add = json!({"prefix": "rbd task add flatten", "image_spec": spec, "format": "json"});
    ctx.lease.check("add a flatten task for")?;
    let task_id = match run_blocking(move || cluster.mgr_command(&add)).await {
        Ok(out) => task_id(&out),
        Err(e) if e.is_transient() => return Err(e.into()),
        // A manager that may not (EACCES: the user lacks `mgr 'profile rbd'`) or cannot
        // (ENOTSUP: no rbd_support module) run the task is no reason for a full copy.
        Err(e) => {
            warn!(error = %e, "the Ceph manager cannot flatten; flattening in the worker");
            return flatten_in_process(ctx).await;
        }
    };
    info!(
        task_id = task_id.as_deref().unwrap_or("?"),
        "flatten task running in the Ceph manager"
    );
    let started = Instant::now();
    let mut last_progress_check = Instant::now();
    let mut reported = 0u8;
    loop {
        if !has_parent(ctx).await? {
            info!(
                seconds = started.elapsed().as_secs_f64(),
                "flatten finished"
            );
            return Ok(StepReport::Done);
        }
        if last_progress_check.elapsed() >= PROGRESS_INTERVAL {
            last_progress_check = Instant::now();
            match task_progress(ctx, task_id.as_deref()).await {
                Some(percent) if percent >= reported.saturating_add(10) => {
                    reported = percent - percent % 10;
                    info!(percent, "flatten progress");
                }
                Some(_) => {}
                None => {
                    // The manager dropped the task (it failed or was cancelled) while the
                    // image still has a parent.
                    if has_parent(ctx).await? {
                        warn!("the Ceph manager's flatten task is gone; flattening in the worker");
                        return flatten_in_process(ctx).await;
                    }
                }
            }
        }
        if started.elapsed() >= ctx.flatten_hold {
            let percent = task_progress(ctx, task_id.as_deref()).await.unwrap_or(0);
            return Err(JobError::FlattenInProgress { percent });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Bytes allocated in the clone's parent snapshot, or None if the clone has no parent.
async fn parent_allocated_bytes(ctx: &JobContext) -> Result<Option<u64>, JobError> {
    let (images, name, cluster) = (
        ctx.image_pool.clone(),
        ctx.names.image.clone(),
        ctx.cluster.clone(),
    );
    Ok(run_blocking(move || {
        let Some(parent) = images.open_read_only(&name, None)?.parent()? else {
            return Ok(None);
        };
        let parent_pool = cluster.pool(&parent.pool)?;
        let snapshot = parent_pool.open_read_only(&parent.image, Some(&parent.snap))?;
        Ok(Some(snapshot.used_bytes()?))
    })
    .await?)
}

async fn has_parent(ctx: &JobContext) -> Result<bool, JobError> {
    let (pool, name) = (ctx.image_pool.clone(), ctx.names.image.clone());
    Ok(
        run_blocking(move || pool.open_read_only(&name, None)?.parent())
            .await?
            .is_some(),
    )
}

fn task_id(output: &str) -> Option<String> {
    let task: serde_json::Value = serde_json::from_str(output).ok()?;
    task["id"].as_str().map(str::to_string)
}

/// Percent done of the manager's task, or None if the manager no longer has it.
async fn task_progress(ctx: &JobContext, task_id: Option<&str>) -> Option<u8> {
    let task_id = task_id?.to_string();
    let cluster = ctx.cluster.clone();
    let list = json!({"prefix": "rbd task list", "task_id": task_id, "format": "json"});
    let out = run_blocking(move || cluster.mgr_command(&list))
        .await
        .ok()?;
    let task: serde_json::Value = serde_json::from_str(&out).ok()?;
    let task = if task.is_array() {
        task.get(0)?.clone()
    } else {
        task
    };
    let progress = task["progress"].as_f64().unwrap_or(0.0);
    Some((progress * 100.0).clamp(0.0, 100.0) as u8)
}

/// librbd's own flatten, in a blocking thread, for clusters without manager tasks.
async fn flatten_in_process(ctx: &JobContext) -> Result<StepReport, JobError> {
    let (image_pool, names, lease) = (ctx.image_pool.clone(), ctx.names.clone(), ctx.lease.clone());
    let span = Span::current();
    let report = run_blocking(move || {
        let _entered = span.enter();
        let mut image = image_pool.open(&names.image)?;
        if image.parent()?.is_none() {
            return Ok(StepReport::AlreadyDone);
        }
        let started = Instant::now();
        let mut next_report_percent = 10;
        lease.check("flatten")?;
        // Asked at each progress report: a flatten whose lease is lost stops.
        image.flatten(&mut |done, total| {
            let percent = done.saturating_mul(100).checked_div(total).unwrap_or(100);
            if percent >= next_report_percent {
                info!(percent, done, total, "flatten progress");
                next_report_percent = percent - percent % 10 + 10;
            }
            lease.is_held()
        })?;
        info!(
            seconds = started.elapsed().as_secs_f64(),
            "flatten finished in the worker"
        );
        Ok(StepReport::Done)
    })
    .await?;
    Ok(report)
}
