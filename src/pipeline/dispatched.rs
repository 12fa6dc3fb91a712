//! Marks the follow-ups of processed messages as dispatched once the broker
//! confirmed them, in the background and in batches.
//!
//! The mark only spares duplicates a second publish ("at least once, rarely
//! twice"): losing one (a crash, an asynchronous commit lost with Postgres)
//! means at most one more copy of a follow-up, which consumers de-duplicate
//! by its deterministic `message_id`. So nothing on the path to an ack waits
//! for it.

use tokio::sync::mpsc;

use crate::store::runs;

/// Most message ids marked by one statement.
const MAX_BATCH: usize = 512;

/// A handle to the background marker; cheap to clone.
#[derive(Clone)]
pub struct DispatchMarks {
    ids: mpsc::UnboundedSender<String>,
}

impl DispatchMarks {
    /// Starts the marker over `pool` (needs a Tokio runtime); it ends when
    /// every handle is dropped.
    pub fn start(pool: sqlx::PgPool) -> Self {
        let (ids, mut queue) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(id) => batch.push(id),
                        Err(_) => break,
                    }
                }
                if let Err(e) = runs::mark_dispatched(&pool, &batch).await {
                    tracing::debug!(error = %e, n = batch.len(), "dispatch marks not written; duplicates may publish again");
                }
            }
        });
        Self { ids }
    }

    /// Records that the follow-ups of `message_id` were all confirmed.
    pub fn mark(&self, message_id: String) {
        let _ = self.ids.send(message_id);
    }
}
