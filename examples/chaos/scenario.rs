//! The scenarios: what each needs of the stack, how its workers reach the
//! broker, and its faults. A fault driver injects the scenario's faults
//! into running traffic and records, per fault, the moment it healed (the
//! service back, the worker restarted, or the kill itself when the other
//! worker keeps running); a service it stopped is brought back by a
//! [`Heal`] guard even if the driver fails.

use std::{sync::Mutex, time::Duration};

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use netra::broker::topology::Names;
use rand::{rngs::StdRng, Rng};

use crate::{
    stack::{Heal, Stack},
    workers::Workers,
};

/// A scenario of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    WorkerKill,
    BrokerNodeStop,
    BrokerNodeKill,
    BrokerRestart,
    BrokerKill,
    PostgresRestart,
    PostgresOutage,
    PostgresFailover,
    RedisFlush,
    RedisRestart,
    Duplicates,
    Poison,
    CutOff,
}

/// Kills of the `worker-kill` scenario.
const WORKER_KILLS: usize = 20;
/// Connections closed by the `cut-off` scenario.
const CUT_OFFS: usize = 5;
/// FLUSHALLs of the `redis-flush` scenario.
const FLUSHES: usize = 3;
/// Length of the `postgres-outage`.
const OUTAGE: Duration = Duration::from_secs(20);

impl Scenario {
    /// Every scenario, in the order the suite runs them.
    pub const ALL: [Scenario; 13] = [
        Scenario::WorkerKill,
        Scenario::CutOff,
        Scenario::BrokerNodeStop,
        Scenario::BrokerNodeKill,
        Scenario::BrokerRestart,
        Scenario::BrokerKill,
        Scenario::PostgresRestart,
        Scenario::PostgresOutage,
        Scenario::PostgresFailover,
        Scenario::RedisFlush,
        Scenario::RedisRestart,
        Scenario::Duplicates,
        Scenario::Poison,
    ];

    /// Its name (`--scenario NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Scenario::WorkerKill => "worker-kill",
            Scenario::BrokerNodeStop => "broker-node-stop",
            Scenario::BrokerNodeKill => "broker-node-kill",
            Scenario::BrokerRestart => "broker-restart",
            Scenario::BrokerKill => "broker-kill",
            Scenario::PostgresRestart => "postgres-restart",
            Scenario::PostgresOutage => "postgres-outage",
            Scenario::PostgresFailover => "postgres-failover",
            Scenario::RedisFlush => "redis-flush",
            Scenario::RedisRestart => "redis-restart",
            Scenario::Duplicates => "duplicates",
            Scenario::Poison => "poison",
            Scenario::CutOff => "cut-off",
        }
    }

    /// The scenario named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// What it does, in one line (`--list`).
    pub fn what(self) -> &'static str {
        match self {
            Scenario::WorkerKill => {
                "kill -9 of a random worker at random moments, 20 times, restarted after each kill"
            }
            Scenario::BrokerNodeStop => {
                "stop the RabbitMQ node leading the phase queues, start it again (cluster)"
            }
            Scenario::BrokerNodeKill => {
                "kill -9 a RabbitMQ node that is not the leader, start it again (cluster)"
            }
            Scenario::BrokerRestart => "workers know only node 1: stop node 1, start it again",
            Scenario::BrokerKill => "workers know only node 1: kill -9 node 1, start it again",
            Scenario::PostgresRestart => "restart Postgres",
            Scenario::PostgresOutage => "stop Postgres for 20 s",
            Scenario::PostgresFailover => {
                "stop the primary, promote the standby (workers have both hosts)"
            }
            Scenario::RedisFlush => "FLUSHALL mid-flight, 3 times",
            Scenario::RedisRestart => "restart Redis",
            Scenario::Duplicates => {
                "every phase message copied once more, every request published twice"
            }
            Scenario::Poison => "eight kinds of poison mixed into the good traffic",
            Scenario::CutOff => "close a random worker's connection from the broker side, 5 times",
        }
    }

    /// Why it cannot run on this stack, if it cannot.
    pub fn unmet(self, stack: &Stack) -> Option<&'static str> {
        match self {
            Scenario::BrokerNodeStop | Scenario::BrokerNodeKill if !stack.is_cluster() => {
                Some("skipped: start the stack with --rabbitmq-nodes 3")
            }
            Scenario::PostgresFailover if stack.database_urls.is_none() => {
                Some("skipped: start the stack with --postgres-standby")
            }
            _ => None,
        }
    }

    /// Over how long the load (but its tail) is spread: about as long as
    /// the faults take, so that they hit work in flight.
    pub fn window(self) -> Duration {
        Duration::from_secs(match self {
            Scenario::WorkerKill => 14,
            Scenario::CutOff => 8,
            Scenario::BrokerNodeStop
            | Scenario::BrokerNodeKill
            | Scenario::BrokerRestart
            | Scenario::BrokerKill => 8,
            Scenario::PostgresOutage => 20,
            Scenario::PostgresRestart | Scenario::PostgresFailover => 5,
            Scenario::RedisFlush => 4,
            Scenario::RedisRestart | Scenario::Duplicates | Scenario::Poison => 3,
        })
    }

    /// `NETRA_AMQP_URL` of each worker: the whole cluster (starting at
    /// another node for each) in the cluster scenarios, else node 1 only.
    pub fn worker_amqp_urls(self, stack: &Stack) -> Vec<String> {
        match self {
            Scenario::BrokerNodeStop | Scenario::BrokerNodeKill => {
                vec![stack.cluster_url(1), stack.cluster_url(2)]
            }
            _ => vec![stack.node_url(1).to_string()],
        }
    }

    /// True when the workers get the primary and the standby.
    pub fn uses_standby(self) -> bool {
        self == Scenario::PostgresFailover
    }

    /// The broker node the scenario will fault, chosen once the workers
    /// declared the topology (the suite's own connections avoid it).
    pub async fn target(self, stack: &Stack, names: &Names, rng: &mut StdRng) -> Result<Target> {
        let mut target = Target::default();
        match self {
            Scenario::BrokerRestart | Scenario::BrokerKill => target.node = Some(1),
            Scenario::BrokerNodeStop => {
                let leaders = leaders(stack, names).await?;
                let most = most_leading(&leaders);
                target.node = Some(most);
                target.led = leaders
                    .into_iter()
                    .find(|(_, n)| *n == most)
                    .map(|(q, _)| q);
            }
            Scenario::BrokerNodeKill => {
                // A node that leads none of the namespace's queues, else
                // one that is not the (main) leader.
                let leaders = leaders(stack, names).await?;
                let most = most_leading(&leaders);
                let nodes = 1..=stack.amqp_urls.len();
                let mut free: Vec<usize> = nodes
                    .clone()
                    .filter(|n| leaders.iter().all(|(_, l)| l != n))
                    .collect();
                if free.is_empty() {
                    free = nodes.filter(|n| *n != most).collect();
                }
                if free.is_empty() {
                    bail!("no RabbitMQ node other than the leader to kill");
                }
                target.node = Some(free[rng.gen_range(0..free.len())]);
            }
            _ => {}
        }
        Ok(target)
    }
}

/// The broker node a scenario faults.
#[derive(Debug, Default, Clone)]
pub struct Target {
    /// The node (1-based).
    pub node: Option<usize>,
    /// A queue it leads, watched for the election of a new leader.
    pub led: Option<String>,
}

/// The leader of each of the namespace's quorum queues (the requests and
/// the phase queues), asked concurrently.
async fn leaders(stack: &Stack, names: &Names) -> Result<Vec<(String, usize)>> {
    let queues = crate::waits::consumed_queues(names);
    let found = futures_util::future::join_all(queues.iter().map(|q| stack.leader(q))).await;
    let mut out = Vec::new();
    for (q, n) in queues.into_iter().zip(found) {
        let n = n?;
        if !(1..=stack.amqp_urls.len()).contains(&n) {
            bail!(
                "rabbitmq-leader {q} named node {n}, not one of 1..={}",
                stack.amqp_urls.len()
            );
        }
        out.push((q, n));
    }
    Ok(out)
}

/// The node leading most of `leaders`' queues.
fn most_leading(leaders: &[(String, usize)]) -> usize {
    let count = |n: usize| leaders.iter().filter(|(_, l)| *l == n).count();
    leaders
        .iter()
        .map(|(_, n)| *n)
        .max_by_key(|n| count(*n))
        .unwrap_or(1)
}

/// What a fault driver works with, and what it records.
pub struct Faults<'a> {
    pub stack: &'a Stack,
    pub workers: &'a Mutex<Workers>,
    pub rng: &'a mut StdRng,
    /// The broker node to fault (see [`Scenario::target`]).
    pub target: Target,
    /// When each fault healed.
    pub heals: Vec<DateTime<Utc>>,
    /// Remarks for the row (e.g. a cut-off that found no connection).
    pub notes: Vec<String>,
    /// A heal that must wait until the scenario is counted (the failover's
    /// `start-service postgres`, which rebuilds the standby).
    pub restore: Option<Heal>,
}

impl Faults<'_> {
    fn healed(&mut self) {
        self.heals.push(Utc::now());
    }

    /// A random pause in `ms` (fault timing, not synchronisation).
    async fn pause(&mut self, ms: std::ops::Range<u64>) {
        let ms = self.rng.gen_range(ms);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Workers> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `inject`, then heals with `heal` after `hold` (random ms).
    async fn stop_start(
        &mut self,
        inject: &[&str],
        heal: &[&str],
        hold: std::ops::Range<u64>,
    ) -> Result<()> {
        let guard = self.stack.heal_with(heal);
        self.stack.run(inject).await?;
        self.pause(hold).await;
        guard.now().await?;
        self.healed();
        Ok(())
    }

    /// Injects the faults of `scenario`.
    pub async fn inject(&mut self, scenario: Scenario) -> Result<()> {
        let node = self.target.node.unwrap_or(1).to_string();
        match scenario {
            Scenario::WorkerKill => {
                for _ in 0..WORKER_KILLS {
                    self.pause(200..1200).await;
                    let n = self.lock().len();
                    let k = self.rng.gen_range(0..n);
                    self.lock().kill(k)?;
                    // The other worker keeps running: healed at the kill.
                    self.healed();
                    self.lock().restart(k)?;
                }
            }
            Scenario::CutOff => {
                for _ in 0..CUT_OFFS {
                    self.pause(200..800).await;
                    let n = self.lock().len();
                    let k = self.rng.gen_range(0..n);
                    let name = format!("netra {}", self.lock().id(k));
                    let closed = self.stack.close_connections(&name).await?;
                    self.healed();
                    if closed == 0 {
                        self.notes
                            .push(format!("`{name}` had no connection to close"));
                    }
                }
            }
            Scenario::BrokerNodeStop => {
                let guard = self.stack.heal_with(&["rabbitmq-node", "start", &node]);
                self.stack.run(&["rabbitmq-node", "stop", &node]).await?;
                self.wait_leader_moved().await;
                guard.now().await?;
                self.healed();
            }
            Scenario::BrokerNodeKill => {
                self.stop_start(
                    &["rabbitmq-node", "kill", &node],
                    &["rabbitmq-node", "start", &node],
                    1000..3000,
                )
                .await?;
            }
            Scenario::BrokerRestart => {
                self.stop_start(
                    &["rabbitmq-node", "stop", "1"],
                    &["rabbitmq-node", "start", "1"],
                    1000..3000,
                )
                .await?;
            }
            Scenario::BrokerKill => {
                self.stop_start(
                    &["rabbitmq-node", "kill", "1"],
                    &["rabbitmq-node", "start", "1"],
                    1000..3000,
                )
                .await?;
            }
            Scenario::PostgresRestart => {
                let guard = self.stack.heal_with(&["start-service", "postgres"]);
                self.stack.run(&["restart-service", "postgres"]).await?;
                guard.now().await?;
                self.healed();
            }
            Scenario::PostgresOutage => {
                let guard = self.stack.heal_with(&["start-service", "postgres"]);
                self.stack.run(&["stop-service", "postgres"]).await?;
                tokio::time::sleep(OUTAGE).await; // the outage itself
                guard.now().await?;
                self.healed();
            }
            Scenario::PostgresFailover => {
                // The primary comes back (and the standby is rebuilt) after
                // the scenario is counted on the promoted standby.
                self.restore = Some(self.stack.heal_with(&["start-service", "postgres"]));
                self.stack.run(&["postgres-failover"]).await?;
                self.healed();
            }
            Scenario::RedisFlush => {
                for _ in 0..FLUSHES {
                    self.pause(300..1500).await;
                    self.stack.flush_redis().await?;
                    self.healed();
                }
            }
            Scenario::RedisRestart => {
                let guard = self.stack.heal_with(&["start-service", "redis"]);
                self.stack.run(&["restart-service", "redis"]).await?;
                guard.now().await?;
                self.healed();
            }
            Scenario::Duplicates | Scenario::Poison => {}
        }
        Ok(())
    }

    /// After the leader's stop: waits (bounded) until a queue it led has
    /// elected another leader, so that the node is started again only once
    /// the cluster went on without it.
    async fn wait_leader_moved(&mut self) {
        let (Some(stopped), Some(queue)) = (self.target.node, self.target.led.clone()) else {
            return;
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if matches!(self.stack.leader(&queue).await, Ok(n) if n != stopped) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.notes.push(format!(
            "{queue} elected no new leader within 30 s of node {stopped}'s stop"
        ));
    }
}
