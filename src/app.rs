//! Starts netra in-process: pool, migrations, cache, engine, the serve loop
//! and the HTTP API. `netra serve`, the demo, the benchmark and the tests
//! all start it this way.

use std::net::SocketAddr;

use tokio::task::JoinHandle;

use crate::{
    agents,
    cache::Cache,
    config::Config,
    pipeline::{agent::AgentSet, service, shutdown, Engine},
    store,
};

/// How to start.
#[derive(Clone)]
pub struct StartOptions {
    /// What to consume.
    pub serve: service::ServeOptions,
    /// Serve the HTTP API (on `config.http_addr`).
    pub http: bool,
    /// The agents (default: the standard five).
    pub agents: Option<AgentSet>,
}

impl Default for StartOptions {
    fn default() -> Self {
        Self {
            serve: service::ServeOptions::default(),
            http: true,
            agents: None,
        }
    }
}

/// A running netra.
pub struct App {
    /// The engine (pool, names, metrics, …).
    pub engine: Engine,
    /// Where the API listens, when it does.
    pub http_addr: Option<SocketAddr>,
    trigger: shutdown::Trigger,
    tasks: Vec<JoinHandle<()>>,
}

/// Why netra could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Postgres unreachable or refused.
    #[error("database: {0}")]
    Database(#[from] store::Error),
    /// Migrations failed.
    #[error("migrations: {0}")]
    Migrate(store::Error),
    /// The API address is in use or invalid.
    #[error("http: {0}")]
    Http(#[from] std::io::Error),
    /// A service's TLS certificate did not verify (the message names the
    /// service).
    #[error("tls: {0}")]
    Tls(String),
}

impl App {
    /// Migrates, connects and starts everything.
    pub async fn start(config: Config, opts: StartOptions) -> Result<Self, StartError> {
        let pool = match store::connect(&config).await {
            Ok(pool) => pool,
            Err(e) => {
                return Err(match crate::tls::postgres_refusal(&e.to_string()) {
                    Some(refused) => StartError::Tls(refused),
                    None => StartError::Database(e),
                })
            }
        };
        crate::tls::check_services(&config)
            .await
            .map_err(StartError::Tls)?;
        store::migrate(&pool).await.map_err(StartError::Migrate)?;
        agents::catalog::load_catalog(&pool).await?;
        let cache = Cache::connect(&config).await;
        let http_addr_cfg = config.http_addr;
        let marks = store::connect_relaxed(&config).await?;
        let hot = store::connect_hot(&config).await?;
        let seal = crate::pipeline::seal::Seal::load(&config, &pool).await?;
        let pools = crate::pipeline::Pools {
            main: pool,
            marks,
            hot,
        };
        let engine = Engine::new(
            config,
            pools,
            opts.agents.unwrap_or_else(agents::standard),
            cache,
            seal,
        );
        let (trigger, stop) = shutdown::channel();
        let mut tasks = Vec::new();
        let mut http_addr = None;
        if opts.http {
            let listener = tokio::net::TcpListener::bind(http_addr_cfg).await?;
            http_addr = Some(listener.local_addr()?);
            let (e, s) = (engine.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(err) = crate::api::serve(e, listener, s).await {
                    tracing::error!(error = %err, "HTTP API stopped");
                }
            }));
        }
        let (e, s, serve_opts) = (engine.clone(), stop.clone(), opts.serve.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(err) = service::run(e, serve_opts, s).await {
                tracing::error!(error = %err, "worker stopped");
            }
        }));
        Ok(Self {
            engine,
            http_addr,
            trigger,
            tasks,
        })
    }

    /// Waits until the worker is connected to the broker with its topology
    /// declared (queues bound), so a publish right after start is routed;
    /// `false` if that took longer than `timeout`.
    pub async fn wait_connected(&self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.engine.link.is_up() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        true
    }

    /// Signals shutdown and waits for in-flight work, at most the grace
    /// period plus a margin; whatever is still running then is aborted (its
    /// unacked deliveries return to the broker).
    pub async fn shutdown(self) {
        self.trigger.fire();
        let deadline = tokio::time::Instant::now()
            + self.engine.config.shutdown_grace
            + std::time::Duration::from_secs(10);
        for mut t in self.tasks {
            if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
                tracing::warn!("a task did not stop within the grace period; aborting it");
                t.abort();
            }
        }
        self.engine.pool.close().await;
        self.engine.marks.close().await;
        self.engine.hot.close().await;
    }
}
