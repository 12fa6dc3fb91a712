//! The serve loop: connect to RabbitMQ (with backoff), declare the topology,
//! start the request consumer, the phase consumers and the retry scheduler,
//! and on a lost connection tear them down and start over. Deliveries that
//! were in flight when the connection dropped come back from the broker and
//! are deduplicated.

use std::{sync::Arc, time::Duration};

use tokio::task::JoinSet;

use super::{consumer, intake, shutdown, worker, Engine};
use crate::{
    broker::{self, publisher::Publisher, topology},
    error::InfraError,
};

/// What this process serves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Phases to consume (None: all).
    pub phases: Option<Vec<String>>,
    /// Consume `<ns>.requests`.
    pub requests: bool,
    /// Run the retry scheduler and stale-run sweeper.
    pub scheduler: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            phases: None,
            requests: true,
            scheduler: true,
        }
    }
}

/// Runs until `stop` fires. Returns an error only for a bad option.
pub async fn run(
    engine: Engine,
    opts: ServeOptions,
    mut stop: shutdown::Shutdown,
) -> Result<(), InfraError> {
    let all = engine.agents.phases();
    let phases: Vec<&'static str> = match &opts.phases {
        None => all.clone(),
        Some(wanted) => {
            for w in wanted {
                if !all.contains(&w.as_str()) {
                    return Err(InfraError::Broker(format!(
                        "unknown phase `{w}` (known: {})",
                        all.join(", ")
                    )));
                }
            }
            all.iter()
                .copied()
                .filter(|p| wanted.iter().any(|w| w == p))
                .collect()
        }
    };
    let mut delay = Duration::from_millis(200);
    loop {
        if stop.is_set() {
            return Ok(());
        }
        match serve_once(&engine, &opts, &all, &phases, stop.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                engine.link.set(None);
                tracing::warn!(error = %e, ?delay, "broker connection lost or refused; reconnecting");
            }
        }
        tokio::select! {
            _ = stop.wait() => return Ok(()),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn serve_once(
    engine: &Engine,
    opts: &ServeOptions,
    all: &[&'static str],
    phases: &[&'static str],
    mut stop: shutdown::Shutdown,
) -> Result<(), InfraError> {
    let conn = broker::connect(
        &engine.config,
        &format!("netra {}", engine.config.worker_id),
    )
    .await?;
    let ch = conn.create_channel().await?;
    topology::declare(&ch, &engine.names, all).await?;
    let _ = ch.close(200, "declared".into()).await;
    engine.link.set(Some(Publisher::open(&conn).await?));
    engine.link.set_probe(Some(conn.create_channel().await?));
    tracing::info!(namespace = %engine.names.namespace(), ?phases, "connected; consuming");

    // A per-connection signal: fired on global shutdown or when any task fails.
    let (local_trigger, local) = shutdown::channel();
    let local_trigger = Arc::new(local_trigger);
    let grace = engine.config.shutdown_grace;
    let mut tasks: JoinSet<Result<(), InfraError>> = JoinSet::new();

    for &phase in phases {
        let publisher = Publisher::open(&conn).await?;
        let channel = conn.create_channel().await?;
        let e = engine.clone();
        let handler: consumer::Handler = Arc::new(move |d| {
            let (e, p) = (e.clone(), publisher.clone());
            Box::pin(worker::handle(e, p, phase, d))
        });
        tasks.spawn(consumer::run(
            channel,
            engine.names.phase_queue(phase),
            engine.config.concurrency_for(phase),
            handler,
            local.clone(),
            grace,
        ));
    }
    if opts.requests {
        let publisher = Publisher::open(&conn).await?;
        let channel = conn.create_channel().await?;
        let e = engine.clone();
        let handler: consumer::Handler = Arc::new(move |d| {
            let (e, p) = (e.clone(), publisher.clone());
            Box::pin(intake::handle(e, p, d))
        });
        tasks.spawn(consumer::run(
            channel,
            engine.names.requests(),
            engine.config.concurrency_for("requests"),
            handler,
            local.clone(),
            grace,
        ));
    }
    if opts.scheduler {
        let publisher = Publisher::open(&conn).await?;
        let channel = conn.create_channel().await?;
        let e = engine.clone();
        let handler: consumer::Handler = Arc::new(move |d| {
            let (e, p) = (e.clone(), publisher.clone());
            Box::pin(super::crashloop::handle(e, p, d))
        });
        tasks.spawn(consumer::run(
            channel,
            engine.names.crashloop_queue(),
            4,
            handler,
            local.clone(),
            grace,
        ));
        let publisher = Publisher::open(&conn).await?;
        tasks.spawn(super::retry::run_scheduler(
            engine.clone(),
            publisher,
            local.clone(),
        ));
    }

    let mut first_error = None;
    loop {
        tokio::select! {
            _ = stop.wait(), if !stop.is_set() => {
                tracing::info!("shutdown requested; finishing in-flight work");
                local_trigger.fire();
            }
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => {
                    if first_error.is_none() {
                        first_error = Some(e);
                    }
                    local_trigger.fire();
                }
                Some(Err(join)) => {
                    if first_error.is_none() {
                        first_error = Some(InfraError::Broker(format!("consumer task failed: {join}")));
                    }
                    local_trigger.fire();
                }
            }
        }
    }
    engine.link.set(None);
    engine.link.set_probe(None);
    drop(conn);
    match first_error {
        Some(e) if !stop.is_set() => Err(e),
        _ => Ok(()),
    }
}
