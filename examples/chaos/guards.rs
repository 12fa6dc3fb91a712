//! Drop guards of a scenario, so that a failed or interrupted scenario
//! leaves nothing behind: [`Task`] aborts a task, [`Cleanup`] deletes the
//! namespace and reply queue and drops the database.

use anyhow::{anyhow, Result};
use netra::config::Config;
use tokio::task::JoinHandle;

use crate::{common, traffic::Broker};

/// A task aborted when dropped (the scenario failed or was interrupted).
pub struct Task<T>(pub Option<JoinHandle<T>>);

impl<T: Send + 'static> Task<T> {
    pub fn spawn(f: impl std::future::Future<Output = T> + Send + 'static) -> Self {
        Self(Some(tokio::spawn(f)))
    }

    pub async fn join(mut self) -> Result<T> {
        let handle = self.0.take().ok_or_else(|| anyhow!("task joined twice"))?;
        handle
            .await
            .map_err(|e| anyhow!("a task of the scenario failed: {e}"))
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

/// Deletes the scenario's namespace and reply queue and drops its
/// database: at the end, or on drop when the scenario failed (on a runtime
/// of its own, like tests/it/common's TestApp).
pub struct Cleanup {
    pub config: Config,
    pub db: String,
    pub broker: Broker,
    pub reply_queue: String,
    pub done: bool,
}

impl Cleanup {
    pub async fn finish(mut self) {
        self.done = true;
        clean(&self.config, &self.db, &self.broker, &self.reply_queue).await;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (config, db) = (self.config.clone(), self.db.clone());
        let (broker, queue) = (self.broker.clone(), self.reply_queue.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(clean(&config, &db, &broker, &queue));
            }
        })
        .join();
    }
}

async fn clean(config: &Config, db: &str, broker: &Broker, reply_queue: &str) {
    broker.delete_queue(reply_queue).await;
    common::cleanup(config, db).await;
}
