//! Failover between the hosts of a multi-host `NETRA_DATABASE_URL` (see
//! [`super::hosts`]): the pools of one URL in a process, the host they use,
//! and the watcher that moves them to the writable host.
//!
//! Every pool of a multi-host URL refuses a new connection to a server in
//! recovery, closes the connections it opened before the last switch when
//! they are acquired or released, and is watched, with the other pools of
//! the same URL, by one task that asks the current host `SELECT
//! pg_is_in_recovery()` every [`CHECK_EVERY`]; when the host fails or is in
//! recovery, the task points every pool at the writable host and logs the
//! warning `database primary moved` (`host:port` only). The task ends once
//! all its pools are closed.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, Weak,
    },
    time::{Duration, Instant},
};

use secrecy::{ExposeSecret, SecretString};
use sqlx::{
    pool::PoolConnectionMetadata,
    postgres::{PgConnectOptions, PgConnection, PgPoolOptions},
    ConnectOptions, Connection, PgPool,
};
use tokio::task::JoinHandle;

use super::{
    hosts::{in_recovery, Host, Hosts, CHECK_EVERY, PROBE_TIMEOUT},
    Error,
};

/// The `after_connect` of a watched pool: a server in recovery is refused
/// (an I/O error, i.e. an outage; the pool tries again until its acquire
/// timeout).
async fn refuse_standby(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    if in_recovery(conn).await? {
        return Err(sqlx::Error::Io(std::io::Error::other(
            "the Postgres server is a standby (in recovery); netra connects only to the primary",
        )));
    }
    Ok(())
}

/// What a pool adds to a host's connect options (its settings).
pub(crate) type Derive = fn(PgConnectOptions) -> PgConnectOptions;

/// A watched pool and how its options are made from a host's.
struct Member {
    pool: PgPool,
    derive: Derive,
}

/// The pools of one multi-host URL in this process, the host they use and
/// the time of the last switch. The watcher task holds it; the pools'
/// hooks and the registry hold it weakly, so it goes away with the task.
struct Failover {
    url: SecretString,
    ca: Option<PathBuf>,
    hosts: Hosts,
    current: AtomicUsize,
    epoch: Instant,
    /// Nanoseconds from `epoch` to the last switch; 0 before any.
    switched: AtomicU64,
    members: Mutex<Vec<Member>>,
    watcher: Mutex<Option<JoinHandle<()>>>,
}

/// The failover state of each multi-host URL in use in this process.
static REGISTRY: tokio::sync::Mutex<Vec<Weak<Failover>>> =
    tokio::sync::Mutex::const_new(Vec::new());

impl Failover {
    /// The state of `url` (with `ca`), made (and its writable host found)
    /// when no live one exists.
    async fn for_url(
        url: &SecretString,
        ca: Option<&Path>,
        hosts: Hosts,
    ) -> Result<Arc<Self>, Error> {
        let mut registry = REGISTRY.lock().await;
        registry.retain(|w| w.strong_count() > 0);
        let found = registry.iter().filter_map(Weak::upgrade).find(|f| {
            f.url.expose_secret() == url.expose_secret() && f.ca.as_deref() == ca && f.watching()
        });
        if let Some(found) = found {
            return Ok(found);
        }
        let current = hosts.writable().await?;
        let failover = Arc::new(Self {
            url: url.clone(),
            ca: ca.map(Path::to_path_buf),
            hosts,
            current: AtomicUsize::new(current),
            epoch: Instant::now(),
            switched: AtomicU64::new(0),
            members: Mutex::new(Vec::new()),
            watcher: Mutex::new(None),
        });
        registry.push(Arc::downgrade(&failover));
        Ok(failover)
    }

    /// True while the watcher task runs (or before it was started).
    fn watching(&self) -> bool {
        let watcher = self.watcher.lock().unwrap_or_else(|p| p.into_inner());
        watcher.as_ref().is_none_or(|h| !h.is_finished())
    }

    fn current_host(&self) -> &Host {
        let i = self.current.load(Ordering::Acquire);
        self.hosts.get(i).unwrap_or_else(|| self.hosts.first())
    }

    /// True for a connection of this `age` opened after the last switch.
    fn opened_after_switch(&self, age: Duration) -> bool {
        let switched = self.switched.load(Ordering::Acquire);
        if switched == 0 {
            return true;
        }
        let since = self
            .epoch
            .elapsed()
            .saturating_sub(Duration::from_nanos(switched));
        age <= since
    }

    /// Watches `pool` too, starting the watcher if it does not run.
    fn add(self: &Arc<Self>, pool: PgPool, derive: Derive) {
        self.members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Member { pool, derive });
        let mut watcher = self.watcher.lock().unwrap_or_else(|p| p.into_inner());
        if watcher.as_ref().is_none_or(JoinHandle::is_finished) {
            *watcher = Some(tokio::spawn(self.clone().watch()));
        }
    }

    /// Drops closed pools; false when none is left.
    fn prune(&self) -> bool {
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        members.retain(|m| !m.pool.is_closed());
        !members.is_empty()
    }

    /// Points every pool at host `to` and marks the connections opened so
    /// far as stale.
    fn switch(&self, from: usize, to: usize) {
        let Some(host) = self.hosts.get(to) else {
            return;
        };
        for m in self
            .members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            m.pool
                .set_connect_options((m.derive)(host.options().clone()));
        }
        self.current.store(to, Ordering::Release);
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.switched.store(now.max(1), Ordering::Release);
        let from = self.hosts.get(from).map_or("?", Host::label);
        tracing::warn!(from, to = host.label(), "database primary moved");
    }

    /// Asks the current host, every [`CHECK_EVERY`], whether it is still
    /// the primary; when it is not (or does not answer), switches to the
    /// writable host if that is another. Ends when all pools are closed.
    async fn watch(self: Arc<Self>) {
        let mut conn: Option<PgConnection> = None;
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lost = false;
        loop {
            tick.tick().await;
            if !self.prune() {
                break;
            }
            let current = self.current.load(Ordering::Acquire);
            if let Ok(false) = check(self.current_host(), &mut conn).await {
                lost = false;
                continue;
            }
            conn = None;
            match self.hosts.writable().await {
                Ok(to) => {
                    if to != current {
                        self.switch(current, to);
                    }
                    lost = false;
                }
                Err(e) => {
                    if !lost {
                        tracing::warn!(error = %e, "database primary lost; looking for the writable host every second");
                    }
                    lost = true;
                }
            }
        }
        if let Some(conn) = conn {
            let _ = conn.close().await;
        }
    }
}

/// Whether `host` is in recovery, on the kept connection (opened if there
/// is none); any failure or timeout is an error.
async fn check(host: &Host, conn: &mut Option<PgConnection>) -> Result<bool, ()> {
    let attempt = async {
        if conn.is_none() {
            *conn = Some(host.options().connect().await?);
        }
        match conn.as_mut() {
            Some(c) => in_recovery(c).await,
            None => Err(sqlx::Error::PoolClosed),
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
        Ok(Ok(answer)) => Ok(answer),
        _ => Err(()),
    }
}

/// Opens a pool of a multi-host URL (with `ca`, the TLS CA the options
/// trust, part of what identifies it) on the writable host, with the
/// failover hooks, and has it watched. `derive` makes the pool's options
/// from a host's (its settings), now and after a switch.
pub(crate) async fn open_pool(
    url: &SecretString,
    ca: Option<&Path>,
    hosts: Hosts,
    pool: PgPoolOptions,
    derive: Derive,
) -> Result<PgPool, Error> {
    let failover = Failover::for_url(url, ca, hosts).await?;
    let options = derive(failover.current_host().options().clone());
    let (acquire, release) = (Arc::downgrade(&failover), Arc::downgrade(&failover));
    let fresh = |failover: &Weak<Failover>, meta: PoolConnectionMetadata| {
        failover
            .upgrade()
            .is_none_or(|f| f.opened_after_switch(meta.age))
    };
    let pool = pool
        .after_connect(|conn, _meta| Box::pin(refuse_standby(conn)))
        .before_acquire(move |_conn, meta| {
            let keep = fresh(&acquire, meta);
            Box::pin(async move { Ok(keep) })
        })
        .after_release(move |_conn, meta| {
            let keep = fresh(&release, meta);
            Box::pin(async move { Ok(keep) })
        })
        .connect_with(options)
        .await?;
    failover.add(pool.clone(), derive);
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_time_tells_old_connections_from_new() {
        let f = Failover {
            url: SecretString::from("postgres://h1,h2/db"),
            ca: None,
            hosts: Hosts::parse("postgres://h1,h2/db").unwrap(),
            current: AtomicUsize::new(0),
            epoch: Instant::now(),
            switched: AtomicU64::new(0),
            members: Mutex::new(Vec::new()),
            watcher: Mutex::new(None),
        };
        // Before any switch every connection is current.
        assert!(f.opened_after_switch(Duration::from_secs(90)));
        // A switch now: a connection opened 30 s ago is stale, one opened
        // after it (age 0) is not.
        std::thread::sleep(Duration::from_millis(20));
        f.switch(0, 1);
        assert_eq!(f.current_host().label(), "h2:5432");
        assert!(!f.opened_after_switch(Duration::from_secs(30)));
        assert!(f.opened_after_switch(Duration::ZERO));
    }
}
