//! The serve loop: connect to RabbitMQ (with backoff), declare the topology,
//! start the request consumer, the phase consumers and the retry scheduler,
//! and on a lost connection tear them down and start over. Deliveries that
//! were in flight when the connection dropped come back from the broker and
//! are deduplicated.

use std::{future::Future, sync::Arc, time::Duration};

use lapin::{message::Delivery, Connection};
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

/// Serves on one connection until `stop` fires (Ok) or a task fails (its
/// error, after the others have stopped).
async fn serve_once(
    engine: &Engine,
    opts: &ServeOptions,
    all: &[&'static str],
    phases: &[&'static str],
    mut stop: shutdown::Shutdown,
) -> Result<(), InfraError> {
    let conn = connect(engine, all).await?;
    tracing::info!(namespace = %engine.names.namespace(), ?phases, "connected; consuming");

    // A per-connection signal: fired on global shutdown or when any task fails.
    let (local_trigger, local) = shutdown::channel();
    let tasks = start_tasks(engine, opts, phases, &conn, &local).await?;
    let first_error = join_all(tasks, &mut stop, &local_trigger).await;
    engine.link.set(None);
    engine.link.set_probe(None);
    drop(conn);
    match first_error {
        Some(e) if !stop.is_set() => Err(e),
        _ => Ok(()),
    }
}

/// Connects, declares the topology of `all` phases, and gives the engine's
/// link a publisher and a probe channel on the new connection.
async fn connect(engine: &Engine, all: &[&'static str]) -> Result<Connection, InfraError> {
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
    Ok(conn)
}

/// Starts the consumers of `phases`, of the requests and of the crash-loop
/// queue, and the retry scheduler, as `opts` says, each stopping when
/// `local` fires.
async fn start_tasks(
    engine: &Engine,
    opts: &ServeOptions,
    phases: &[&'static str],
    conn: &Connection,
    local: &shutdown::Shutdown,
) -> Result<Tasks, InfraError> {
    let mut starter = Starter {
        engine,
        conn,
        local,
        tasks: JoinSet::new(),
    };
    for &phase in phases {
        let prefetch = engine.config.concurrency_for(phase);
        starter
            .consume(engine.names.phase_queue(phase), prefetch, move |e, p, d| {
                worker::handle(e, p, phase, d)
            })
            .await?;
    }
    if opts.requests {
        let prefetch = engine.config.intake_concurrency();
        starter
            .consume(engine.names.requests(), prefetch, intake::handle)
            .await?;
    }
    if opts.scheduler {
        starter
            .consume(engine.names.crashloop_queue(), 4, super::crashloop::handle)
            .await?;
        let publisher = Publisher::open(conn).await?;
        let scheduler =
            super::retry::run_scheduler(engine.clone(), publisher, starter.local.clone());
        starter.tasks.spawn(scheduler);
        let publisher = Publisher::open(conn).await?;
        let admission = super::admission::run(engine.clone(), publisher, starter.local.clone());
        starter.tasks.spawn(admission);
    }
    Ok(starter.tasks)
}

/// The tasks serving one connection.
type Tasks = JoinSet<Result<(), InfraError>>;

/// Starts the tasks of one connection.
struct Starter<'a> {
    engine: &'a Engine,
    conn: &'a Connection,
    local: &'a shutdown::Shutdown,
    tasks: Tasks,
}

impl Starter<'_> {
    /// Consumes `queue` on a channel and a publisher of its own, `handle`
    /// handling each delivery.
    async fn consume<H, F>(
        &mut self,
        queue: String,
        prefetch: u16,
        handle: H,
    ) -> Result<(), InfraError>
    where
        H: Fn(Engine, Publisher, Delivery) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let publisher = Publisher::open(self.conn).await?;
        let channel = self.conn.create_channel().await?;
        let e = self.engine.clone();
        let handler: consumer::Handler = Arc::new(move |d| {
            let (e, p) = (e.clone(), publisher.clone());
            Box::pin(handle(e, p, d))
        });
        self.tasks.spawn(consumer::run(
            channel,
            queue,
            prefetch,
            handler,
            self.local.clone(),
            self.engine.config.shutdown_grace,
        ));
        Ok(())
    }
}

/// Waits until every task has ended. On shutdown, and at the first task
/// that fails, fires `local_trigger` so that the others stop too; returns
/// the first failure.
async fn join_all(
    mut tasks: Tasks,
    stop: &mut shutdown::Shutdown,
    local_trigger: &shutdown::Trigger,
) -> Option<InfraError> {
    let mut first_error = None;
    loop {
        tokio::select! {
            _ = stop.wait(), if !stop.is_set() => {
                tracing::info!("shutdown requested; finishing in-flight work");
                local_trigger.fire();
            }
            joined = tasks.join_next() => {
                let Some(joined) = joined else { break };
                let result = joined.unwrap_or_else(|join| {
                    Err(InfraError::Broker(format!("consumer task failed: {join}")))
                });
                if let Err(e) = result {
                    first_error.get_or_insert(e);
                    local_trigger.fire();
                }
            }
        }
    }
    first_error
}
