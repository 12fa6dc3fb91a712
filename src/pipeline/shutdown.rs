//! A shutdown signal that many tasks can wait on (mini-redis style): the
//! owner flips it once; every clone sees it.

use tokio::sync::watch;

/// Sender side: trigger once.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// Receiver side: cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A new signal pair.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Signals shutdown to every receiver.
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }

    /// A receiver.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// True once shutdown was signalled.
    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when shutdown is signalled (or the trigger is dropped).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }
}
