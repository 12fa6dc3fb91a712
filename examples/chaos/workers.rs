//! The workers of one scenario: `netra serve` child processes on the
//! scenario's database and namespace, with the env of `spawn_worker` in
//! tests/faults.rs (fast retries, 3 s leases, quiet logs) and a worker id
//! of their own (`NETRA_WORKER_ID`, so the broker names each connection
//! `netra <worker id>`). A worker that is killed is started again under a
//! new id, as a restarted process would be; one that exits by itself is
//! restarted by [`Workers::restart_exited`] and counted. Dropping
//! [`Workers`] kills them all (also when a scenario fails or is cut short).

use std::{
    fs::OpenOptions,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Mutex, Weak},
    time::Duration,
};

use anyhow::{Context, Result};

/// How to start a worker.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The `netra` binary.
    pub bin: PathBuf,
    /// `NETRA_AMQP_URL` of worker k (a cluster's URLs start at another
    /// node for each worker).
    pub amqp_urls: Vec<String>,
    /// `NETRA_DATABASE_URL` (the scenario's database).
    pub database_url: String,
    /// `NETRA_NAMESPACE`.
    pub namespace: String,
    /// Where each worker's stderr goes (`<label>-w<k>.log`, appended).
    pub log_dir: PathBuf,
    /// The scenario, in log file names and worker ids.
    pub label: String,
}

struct Slot {
    child: Option<Child>,
    generation: u32,
}

/// The running workers of a scenario.
pub struct Workers {
    spec: Spec,
    slots: Vec<Slot>,
    /// Workers that exited without being killed (then restarted).
    pub unexpected_exits: usize,
}

impl Workers {
    /// Starts `n` workers.
    pub fn start(spec: Spec, n: usize) -> Result<Self> {
        let mut w = Self {
            spec,
            slots: (0..n)
                .map(|_| Slot {
                    child: None,
                    generation: 0,
                })
                .collect(),
            unexpected_exits: 0,
        };
        for k in 0..n {
            w.spawn(k)?;
        }
        Ok(w)
    }

    /// How many workers there are.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The worker id of worker `k`'s current process.
    pub fn id(&self, k: usize) -> String {
        format!("{}-w{k}.{}", self.spec.namespace, self.slots[k].generation)
    }

    fn spawn(&mut self, k: usize) -> Result<()> {
        self.slots[k].generation += 1;
        let id = self.id(k);
        let log_path = self
            .spec
            .log_dir
            .join(format!("{}-w{k}.log", self.spec.label));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open worker log {}", log_path.display()))?;
        let amqp = &self.spec.amqp_urls[k % self.spec.amqp_urls.len()];
        let mut cmd = Command::new(&self.spec.bin);
        cmd.args(["serve", "--no-http"]);
        // The embedded analyst, as in the tests: no language model from
        // the environment changes what the suite measures.
        for (key, _) in std::env::vars() {
            if key.starts_with("NETRA_LLM_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .env("NETRA_AMQP_URL", amqp)
            .env("NETRA_DATABASE_URL", &self.spec.database_url)
            .env("NETRA_NAMESPACE", &self.spec.namespace)
            .env("NETRA_WORKER_ID", &id)
            .env("NETRA_AMQP_DEFAULT_TENANT", "default")
            .env("NETRA_RETRY_INITIAL_MS", "50")
            .env("NETRA_RETRY_MAX_MS", "400")
            .env("NETRA_REPUBLISH_AFTER_MS", "5000")
            // A killed worker's leases expire (and are swept) within seconds.
            .env("NETRA_LEASE_MS", "3000")
            .env("NETRA_SHUTDOWN_GRACE_MS", "10000")
            .env("NETRA_DB_POOL", "8")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.spec.bin.display()))?;
        self.slots[k].child = Some(child);
        Ok(())
    }

    /// `kill -9` of worker `k` (waiting until it is gone).
    pub fn kill(&mut self, k: usize) -> Result<()> {
        if let Some(mut child) = self.slots[k].child.take() {
            child
                .kill()
                .with_context(|| format!("cannot kill worker {}", self.id(k)))?;
            child.wait().context("waiting for a killed worker")?;
        }
        Ok(())
    }

    /// Starts worker `k` again (under a new worker id).
    pub fn restart(&mut self, k: usize) -> Result<()> {
        self.kill(k)?;
        self.spawn(k)
    }

    /// Restarts the workers that exited by themselves; returns how many.
    pub fn restart_exited(&mut self) -> Result<usize> {
        let mut n = 0;
        for k in 0..self.slots.len() {
            let exited = match self.slots[k].child.as_mut() {
                Some(child) => child.try_wait().context("polling a worker")?,
                None => continue,
            };
            if let Some(status) = exited {
                eprintln!(
                    "chaos: worker {} exited by itself ({status}); restarting it (log: {})",
                    self.id(k),
                    self.spec.log_dir.display()
                );
                self.slots[k].child = None;
                self.spawn(k)?;
                n += 1;
            }
        }
        self.unexpected_exits += n;
        Ok(n)
    }

    /// Kills every worker.
    pub fn kill_all(&mut self) {
        for k in 0..self.slots.len() {
            if let Err(e) = self.kill(k) {
                eprintln!("chaos: {e:#}");
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Restarts workers that exited by themselves, while the scenario lasts.
pub async fn supervise(workers: Weak<Mutex<Workers>>) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(workers) = workers.upgrade() else {
            return;
        };
        let mut w = workers.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = w.restart_exited() {
            crate::log(format!("{e:#}"));
        }
    }
}
