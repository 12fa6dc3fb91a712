//! A test agent around a standard one: it counts its calls and passes them
//! on, and as the test sets it up, fails its first calls, waits at a gate
//! the test opens (a phase that runs as long as the test wants), or fails
//! after the inner agent ran in replay generation 0.

use std::sync::{
    atomic::{AtomicU32, Ordering},
    Arc,
};

use futures_util::future::BoxFuture;
use netra::{
    error::PhaseError,
    pipeline::agent::{Agent, AgentContext, AgentSet, PhaseInput},
};
use serde_json::Value;
use tokio::sync::Semaphore;

/// The wrapper; see the module.
pub struct Wrapper {
    inner: Arc<dyn Agent>,
    /// Calls so far (counted first, before failing or waiting).
    pub calls: AtomicU32,
    /// Each call waits for a permit of this gate (closed until the test
    /// opens it), when set.
    gate: Option<Semaphore>,
    /// The first this many calls fail with this error, before the inner
    /// agent runs.
    fail_first: Option<(u32, PhaseError)>,
    /// Calls of replay generation 0 fail with this error after the inner
    /// agent ran (and succeeded).
    fail_after_in_replay_0: Option<PhaseError>,
}

impl Wrapper {
    /// Passes every call to `inner`.
    pub fn new(inner: Arc<dyn Agent>) -> Self {
        Wrapper {
            inner,
            calls: AtomicU32::new(0),
            gate: None,
            fail_first: None,
            fail_after_in_replay_0: None,
        }
    }

    /// Each call waits until the test [`Wrapper::open`]s the gate.
    pub fn gated(mut self) -> Self {
        self.gate = Some(Semaphore::new(0));
        self
    }

    /// The first `times` calls fail with `error`.
    pub fn failing_first(mut self, times: u32, error: PhaseError) -> Self {
        self.fail_first = Some((times, error));
        self
    }

    /// Calls of replay generation 0 fail with `error` after the inner agent
    /// ran.
    pub fn failing_after_in_replay_0(mut self, error: PhaseError) -> Self {
        self.fail_after_in_replay_0 = Some(error);
        self
    }

    /// Lets `permits` calls through the gate (with the inner agent running).
    pub fn open(&self, permits: usize) {
        if let Some(gate) = &self.gate {
            gate.add_permits(permits);
        }
    }
}

impl Agent for Wrapper {
    fn phase(&self) -> &'static str {
        self.inner.phase()
    }
    fn run<'a>(
        &'a self,
        ctx: &'a AgentContext,
        input: &'a PhaseInput,
    ) -> BoxFuture<'a, Result<Value, PhaseError>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if let Some((times, error)) = &self.fail_first {
                if n < *times {
                    return Err(error.clone());
                }
            }
            let _permit = match &self.gate {
                Some(gate) => Some(
                    gate.acquire()
                        .await
                        .map_err(|_| PhaseError::transient("gate closed"))?,
                ),
                None => None,
            };
            let out = self.inner.run(ctx, input).await?;
            if let Some(error) = &self.fail_after_in_replay_0 {
                if input.replay == 0 {
                    return Err(error.clone());
                }
            }
            Ok(out)
        })
    }
}

/// The standard agents with the one of `phase` wrapped, as `wrap` sets up
/// the [`Wrapper`] around it; and the wrapper, to count its calls and open
/// its gate.
pub fn standard_with(
    phase: &str,
    wrap: impl FnOnce(Wrapper) -> Wrapper,
) -> (AgentSet, Arc<Wrapper>) {
    let base = netra::agents::standard();
    let inner = base.get(phase).expect("a standard phase");
    let wrapper = Arc::new(wrap(Wrapper::new(inner)));
    (base.with(wrapper.clone()), wrapper)
}
