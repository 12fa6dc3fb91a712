//! The local stack as the chaos suite drives it: `deploy/local/stack`'s
//! fault commands, the URLs its `env` printed (one or three RabbitMQ nodes,
//! Postgres with or without a standby), and [`Heal`], a guard that brings a
//! faulted service back even when a scenario fails or is interrupted.
//!
//! The commands used beyond `stop-service`/`start-service`/`restart-service`
//! and `rabbitmqctl` are the cluster contract of `deploy/local/stack`:
//! `rabbitmq-node stop|kill|start N`, `rabbitmq-leader QUEUE` and
//! `postgres-failover`.

use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::{anyhow, bail, Context, Result};

/// Longest time one stack command may take (a RabbitMQ node boots in tens
/// of seconds on a small machine; a standby is rebuilt with a base backup).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(240);

/// The stack's script and the endpoints of its services.
#[derive(Debug, Clone)]
pub struct Stack {
    script: PathBuf,
    /// AMQP URL of node N at index N-1 (one entry on a single-node stack).
    pub amqp_urls: Vec<String>,
    /// `NETRA_STACK_DATABASE_URLS`: primary and standby, libpq multi-host.
    pub database_urls: Option<String>,
    /// `NETRA_REDIS_URL`.
    pub redis_url: String,
}

fn env(name: &str) -> Result<String> {
    std::env::var(name).map_err(|_| {
        anyhow!("{name} is not set: run through deploy/local/chaos, or eval \"$(deploy/local/stack env)\" first")
    })
}

impl Stack {
    /// Reads the stack's environment (`deploy/local/stack env`).
    pub fn from_env() -> Result<Self> {
        let single = env("NETRA_AMQP_URL")?;
        let amqp_urls = match std::env::var("NETRA_STACK_AMQP_URLS") {
            Ok(list) if !list.trim().is_empty() => list
                .split(',')
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty())
                .collect(),
            _ => vec![single],
        };
        // The scenarios' databases are created on it (tests/it/common).
        env("NETRA_DATABASE_URL")?;
        Ok(Self {
            script: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/local/stack"),
            amqp_urls,
            database_urls: std::env::var("NETRA_STACK_DATABASE_URLS")
                .ok()
                .filter(|u| !u.trim().is_empty()),
            redis_url: env("NETRA_REDIS_URL")?,
        })
    }

    /// True with three RabbitMQ nodes (`start --rabbitmq-nodes 3`).
    pub fn is_cluster(&self) -> bool {
        self.amqp_urls.len() >= 3
    }

    /// The AMQP URL of node `n` (1-based).
    pub fn node_url(&self, n: usize) -> &str {
        &self.amqp_urls[n.clamp(1, self.amqp_urls.len()) - 1]
    }

    /// All nodes' URLs, comma-separated, starting at node `first` (1-based):
    /// what a worker that knows the whole cluster is given.
    pub fn cluster_url(&self, first: usize) -> String {
        let n = self.amqp_urls.len();
        (0..n)
            .map(|i| self.amqp_urls[(first - 1 + i) % n].as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs `deploy/local/stack ARGS…` and returns its stdout; a failure
    /// says which command failed and ends with its last lines of stderr.
    pub async fn run(&self, args: &[&str]) -> Result<String> {
        let child = tokio::process::Command::new(&self.script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {}", self.script.display()))?;
        let out = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| {
                anyhow!("deploy/local/stack {args:?} did not finish within {COMMAND_TIMEOUT:?}")
            })??;
        if !out.status.success() {
            bail!(
                "deploy/local/stack {} failed ({}): {}",
                args.join(" "),
                out.status,
                tail(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The node (1-based) leading quorum queue `queue`.
    pub async fn leader(&self, queue: &str) -> Result<usize> {
        let out = self.run(&["rabbitmq-leader", queue]).await?;
        out.trim().parse().with_context(|| {
            format!(
                "rabbitmq-leader {queue} printed {:?}, not a node number",
                out.trim()
            )
        })
    }

    /// Closes, from the broker's side, every connection named `name` (the
    /// name a client gives, `connection_name` in its client properties:
    /// rabbitmqctl's `name` column is the peer address); returns how many
    /// there were.
    pub async fn close_connections(&self, name: &str) -> Result<usize> {
        let listing = self
            .run(&[
                "rabbitmqctl",
                "-q",
                "list_connections",
                "pid",
                "client_properties",
                "--no-table-headers",
            ])
            .await?;
        let wanted = format!("{{\"connection_name\",\"{name}\"}}");
        let pids: Vec<&str> = listing
            .lines()
            .filter(|l| l.contains(&wanted))
            .filter_map(|l| l.split_once('\t'))
            .map(|(pid, _)| pid.trim())
            .collect();
        for pid in &pids {
            self.run(&["rabbitmqctl", "close_connection", pid, "chaos"])
                .await?;
        }
        Ok(pids.len())
    }

    /// `FLUSHALL` on the stack's Redis.
    pub async fn flush_redis(&self) -> Result<()> {
        let client = redis::Client::open(self.redis_url.as_str()).context("NETRA_REDIS_URL")?;
        let mut conn = tokio::time::timeout(
            Duration::from_secs(10),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| anyhow!("Redis did not answer within 10 s"))?
        .context("cannot connect to Redis")?;
        redis::cmd("FLUSHALL")
            .query_async::<()>(&mut conn)
            .await
            .context("FLUSHALL")
    }

    /// A guard that runs `deploy/local/stack ARGS…` to undo a fault:
    /// [`Heal::now`] on the normal path, or on drop when the scenario
    /// failed or was interrupted before it healed the fault.
    pub fn heal_with(&self, args: &[&str]) -> Heal {
        Heal {
            stack: self.clone(),
            args: args.iter().map(|a| a.to_string()).collect(),
            armed: true,
        }
    }
}

/// The last lines of a command's stderr, for an error message.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(8);
    lines[from..].join(" | ")
}

/// Undoes one fault once (see [`Stack::heal_with`]).
pub struct Heal {
    stack: Stack,
    args: Vec<String>,
    armed: bool,
}

impl Heal {
    /// Heals now.
    pub async fn now(mut self) -> Result<()> {
        self.armed = false;
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.stack.run(&args).await.map(drop)
    }
}

impl Drop for Heal {
    /// The scenario ended with the fault in place: heal it synchronously,
    /// so that the next scenario (and the engineer's stack) finds the
    /// service up.
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        eprintln!(
            "chaos: healing after a failure: deploy/local/stack {}",
            self.args.join(" ")
        );
        let status = std::process::Command::new(&self.stack.script)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "chaos: deploy/local/stack {} failed ({status:?}); the stack may need `deploy/local/stack start`",
                self.args.join(" ")
            );
        }
    }
}

/// The single-host URLs of a libpq multi-host URL
/// (`postgres://u:p@h1:1,h2:2/db?opts` gives `postgres://u:p@h1:1/db?opts`
/// and `postgres://u:p@h2:2/db?opts`); a single-host URL gives itself.
pub fn hosts_of(url: &str) -> Vec<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return vec![url.to_string()];
    };
    let (auth, hostpath) = match rest.rsplit_once('@') {
        Some((a, h)) => (format!("{a}@"), h),
        None => (String::new(), rest),
    };
    let (hosts, path) = match hostpath.find('/') {
        Some(i) => hostpath.split_at(i),
        None => (hostpath, ""),
    };
    hosts
        .split(',')
        .map(|h| format!("{scheme}://{auth}{h}{path}"))
        .collect()
}

/// A database URL (single- or multi-host) naming database `db` instead:
/// the path after the last '/' is replaced, query options kept.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, last) = url.rsplit_once('/').unwrap_or((url, ""));
    match last.split_once('?') {
        Some((_, query)) => format!("{base}/{db}?{query}"),
        None => format!("{base}/{db}"),
    }
}
