//! Batching of concurrent requests to one function, for group commit.
//!
//! Callers hand an item to the batcher and wait for its answer. The batcher
//! runs at most `concurrency` batches at a time; whatever arrives while they
//! run goes into the next batch (up to `max_batch` items). So under load
//! many items share one statement, and alone an item goes out at once: no
//! timer, no added latency.

use std::{future::Future, sync::Arc};

use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::metrics::Metrics;

type Job<I, O> = (I, oneshot::Sender<O>);

/// A handle to a running batcher; cheap to clone. The batcher's task ends
/// when every handle is dropped.
pub struct Batcher<I, O> {
    jobs: mpsc::UnboundedSender<Job<I, O>>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Batcher {
            jobs: self.jobs.clone(),
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the batcher task (needs a Tokio runtime). `run` answers a
    /// batch with one output per item, in order; each batch is counted in
    /// `metrics` under `kind`.
    pub fn start<F, Fut>(
        kind: &'static str,
        metrics: Arc<Metrics>,
        max_batch: usize,
        concurrency: usize,
        run: F,
    ) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<O>> + Send + 'static,
    {
        let (jobs, mut queue) = mpsc::unbounded_channel::<Job<I, O>>();
        let slots = Arc::new(Semaphore::new(concurrency.max(1)));
        let max_batch = max_batch.max(1);
        let run = Arc::new(run);
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                // Everything that queued up while the slots were busy.
                let mut batch = vec![first];
                while batch.len() < max_batch {
                    match queue.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                metrics.record_batch(kind, batch.len());
                let run = run.clone();
                tokio::spawn(async move {
                    let (items, answers): (Vec<I>, Vec<_>) = batch.into_iter().unzip();
                    let outputs = run(items).await;
                    for (output, answer) in outputs.into_iter().zip(answers) {
                        let _ = answer.send(output);
                    }
                    drop(slot);
                });
            }
        });
        Batcher { jobs }
    }

    /// Submits an item and waits for its answer. Hands the item back if the
    /// batcher is gone; `Ok(None)` if its batch died without an answer (a
    /// panic).
    pub async fn call(&self, item: I) -> Result<Option<O>, I> {
        let (answer, output) = oneshot::channel();
        self.jobs
            .send((item, answer))
            .map_err(|mpsc::error::SendError((item, _))| item)?;
        Ok(output.await.ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Mutex,
    };

    #[tokio::test]
    async fn items_that_wait_share_a_batch_and_answers_keep_their_order() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let busy = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(tokio::sync::Notify::new());
        let metrics = Arc::new(Metrics::default());
        let b = Batcher::start("test", metrics.clone(), 8, 1, {
            let (sizes, busy, gate) = (sizes.clone(), busy.clone(), gate.clone());
            move |items: Vec<u32>| {
                let (sizes, busy, gate) = (sizes.clone(), busy.clone(), gate.clone());
                async move {
                    if items == [0] {
                        // Hold the only slot until the others have queued up.
                        busy.store(true, Ordering::SeqCst);
                        gate.notified().await;
                    }
                    sizes.lock().unwrap().push(items.len());
                    items.into_iter().map(|i| i * 10).collect()
                }
            }
        });
        let first = tokio::spawn({
            let b = b.clone();
            async move { b.call(0).await }
        });
        while !busy.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        let sent = Arc::new(AtomicUsize::new(0));
        let rest: Vec<_> = (1..=5)
            .map(|i| {
                let (b, sent) = (b.clone(), sent.clone());
                tokio::spawn(async move {
                    // `call` sends in its first poll, before it awaits.
                    sent.fetch_add(1, Ordering::SeqCst);
                    b.call(i).await
                })
            })
            .collect();
        while sent.load(Ordering::SeqCst) < 5 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        assert_eq!(first.await.unwrap().ok(), Some(Some(0)));
        for (i, r) in (1u32..).zip(rest) {
            assert_eq!(r.await.unwrap().ok(), Some(Some(i * 10)));
        }
        assert_eq!(*sizes.lock().unwrap(), vec![1, 5]);
        let text = metrics.render("");
        assert!(
            text.contains("netra_batches_total{kind=\"test\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("netra_batch_items_total{kind=\"test\"} 6"),
            "{text}"
        );
    }
}
