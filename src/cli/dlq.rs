//! `netra dlq …`: list, show and group dead letters, and replay them (a
//! dry run prints what would be replayed; a replay is a job with a reason,
//! a progress bar, and the replayed copies drained from the dead-letter
//! queues).

use anyhow::{bail, Context};

use super::{cli_said, pool, DlqAction, DlqFilterArgs};
use crate::{
    broker::topology::Names,
    config::Config,
    pipeline::{replay, seal::Seal},
    store::{self, dead_letters::DeadLetter},
};

/// `netra dlq …`.
pub(super) async fn run(action: DlqAction) -> anyhow::Result<()> {
    let (_, pool) = pool().await?;
    match action {
        DlqAction::List {
            filter,
            since,
            limit,
        } => dlq_list(&pool, filter, since.as_deref(), limit).await,
        DlqAction::Show { id } => dlq_show(&pool, id).await,
        DlqAction::Replay {
            id,
            run,
            group,
            filter:
                DlqFilterArgs {
                    phase,
                    tenant,
                    error_contains,
                },
            dry_run,
            patch,
            limit,
            rate,
            reason,
        } => {
            let sel = ReplaySelection {
                id,
                run,
                group,
                phase,
                tenant,
                error_contains,
                limit,
            };
            replay_cmd(pool, sel, dry_run, patch, rate, reason).await
        }
        DlqAction::Groups => dlq_groups(&pool).await,
    }
}

/// `netra dlq list`: one line per pending dead letter, under a header.
async fn dlq_list(
    pool: &sqlx::PgPool,
    filter: DlqFilterArgs,
    since: Option<&str>,
    limit: i64,
) -> anyhow::Result<()> {
    let since = since.map(parse_since).transpose()?;
    let f = store::dead_letters::DeadLetterFilter {
        tenant: filter.tenant,
        phase: filter.phase,
        error_contains: filter.error_contains,
        since,
        limit,
        ..Default::default()
    };
    println!(
        "{:<36}  {:<36}  {:<12}  {:<9}  {:>3}  {:>7}  {:<20}  {:<20}  error",
        "id", "run", "phase", "class", "att", "replays", "first failure", "last failure"
    );
    for d in store::dead_letters::list(pool, &f).await? {
        println!(
            "{:<36}  {:<36}  {:<12}  {:<9}  {:>3}  {:>7}  {:<20}  {:<20}  {}",
            d.id,
            run_or_dash(d.run_id),
            d.phase,
            d.error_class,
            d.attempts,
            d.replay,
            d.first_failed_at.format("%Y-%m-%d %H:%M:%S"),
            d.last_failed_at.format("%Y-%m-%d %H:%M:%S"),
            d.error
        );
    }
    Ok(())
}

/// A dead letter's run id, `-` when it has none.
fn run_or_dash(run: Option<uuid::Uuid>) -> String {
    run.map(|r| r.to_string()).unwrap_or_else(|| "-".into())
}

/// `netra dlq show`: the dead letter, then its run's request and persisted
/// inputs.
async fn dlq_show(pool: &sqlx::PgPool, id: uuid::Uuid) -> anyhow::Result<()> {
    let d = store::dead_letters::get(pool, id, None)
        .await?
        .context("no such dead letter")?;
    println!("{}", serde_json::to_string_pretty(&d)?);
    if let Some(run_id) = d.run_id {
        if let Some(run) = store::runs::get(pool, run_id).await? {
            let (outputs, _) = store::runs::load_inputs(pool, &run).await?;
            println!("request: {}", serde_json::to_string_pretty(&run.request)?);
            println!(
                "persisted inputs (upstream outputs): {}",
                serde_json::to_string_pretty(&outputs)?
            );
        }
    }
    Ok(())
}

/// `netra dlq groups`: pending dead letters by phase and fingerprint.
async fn dlq_groups(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    println!("{:>6}  {:<12}  fingerprint", "count", "phase");
    for g in store::dead_letters::groups(pool, None).await? {
        println!("{:>6}  {:<12}  {}", g.count, g.phase, g.fingerprint);
    }
    Ok(())
}

/// Parses `--since`: RFC 3339, or an age such as `30m`, `2h`, `7d`.
pub(super) fn parse_since(s: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .with_context(|| format!("--since `{s}`: use RFC 3339 or an age like 30m, 2h, 7d"))?;
    let age = match unit {
        "s" => chrono::Duration::seconds(n),
        "m" => chrono::Duration::minutes(n),
        "h" => chrono::Duration::hours(n),
        "d" => chrono::Duration::days(n),
        _ => bail!("--since `{s}`: unit must be s, m, h or d"),
    };
    Ok(chrono::Utc::now() - age)
}

/// Which dead letters to replay.
struct ReplaySelection {
    id: Option<uuid::Uuid>,
    run: Option<uuid::Uuid>,
    group: Option<String>,
    phase: Option<String>,
    tenant: Option<String>,
    error_contains: Option<String>,
    limit: i64,
}

impl ReplaySelection {
    /// What was asked for, for the replay job and the audit trail.
    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id, "run": self.run, "fingerprint": self.group, "phase": self.phase,
            "tenant": self.tenant, "error_contains": self.error_contains, "limit": self.limit,
        })
    }

    /// True when it names something to replay (a tenant alone does not).
    fn names_something(&self) -> bool {
        self.id.is_some()
            || self.run.is_some()
            || self.group.is_some()
            || self.phase.is_some()
            || self.error_contains.is_some()
    }

    /// The dead letters it selects: the one of `--id`, else the pending ones
    /// that match the filters (and `--run`).
    async fn targets(self, pool: &sqlx::PgPool) -> anyhow::Result<Vec<DeadLetter>> {
        Ok(match self.id {
            Some(id) => store::dead_letters::get(pool, id, self.tenant.as_deref())
                .await?
                .into_iter()
                .collect(),
            None => {
                let f = store::dead_letters::DeadLetterFilter {
                    tenant: self.tenant,
                    phase: self.phase,
                    error_contains: self.error_contains,
                    fingerprint: self.group,
                    limit: self.limit,
                    ..Default::default()
                };
                store::dead_letters::list(pool, &f)
                    .await?
                    .into_iter()
                    .filter(|d| self.run.is_none() || d.run_id == self.run)
                    .collect()
            }
        })
    }
}

/// `netra dlq replay`: a dry run lists what would be replayed; otherwise
/// the selected dead letters are replayed (with a progress bar) and their
/// replayed copies removed from the dead-letter queues.
async fn replay_cmd(
    pool: sqlx::PgPool,
    sel: ReplaySelection,
    dry_run: bool,
    patch: Option<String>,
    rate: Option<f64>,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let patch = parse_patch(patch)?;
    if !sel.names_something() {
        bail!("say what to replay: --id, --run, --group, --phase or --error-contains");
    }
    // Checked before anything is read, so a replay without a reason
    // changes nothing.
    let said = if dry_run {
        None
    } else {
        Some(cli_said(reason.as_deref())?)
    };
    let selection = sel.describe();
    let targets = sel.targets(&pool).await?;
    let names = Names::new(&config.namespace);
    let job = match &said {
        Some(said) => Some(
            replay::start_job(
                &pool,
                &replay::JobRequest {
                    said,
                    selection,
                    targets: &targets,
                    patch: patch.as_ref(),
                    rate,
                },
            )
            .await?,
        ),
        None => None,
    };
    let opts = replay::Options {
        dry_run,
        patch,
        rate,
        actor: said.map_or_else(|| "cli".into(), |s| s.actor),
        job,
    };
    let job = ReplayJob {
        config: &config,
        pool: &pool,
        names: &names,
        targets: &targets,
        opts: &opts,
    };
    if dry_run {
        return job.dry_run().await;
    }
    job.replay_and_drain().await
}

/// `--patch`: a JSON object keyed by phase name.
fn parse_patch(patch: Option<String>) -> anyhow::Result<Option<serde_json::Value>> {
    let patch: Option<serde_json::Value> = patch
        .map(|p| serde_json::from_str(&p))
        .transpose()
        .context("--patch is not JSON")?;
    if patch.as_ref().is_some_and(|p| !p.is_object()) {
        bail!("--patch must be a JSON object whose keys are phase names");
    }
    Ok(patch)
}

/// The dead letters `netra dlq replay` selected, and how to replay them.
struct ReplayJob<'a> {
    config: &'a Config,
    pool: &'a sqlx::PgPool,
    names: &'a Names,
    targets: &'a [DeadLetter],
    opts: &'a replay::Options,
}

impl ReplayJob<'_> {
    /// Lists what a replay would do, and counts it; changes nothing.
    async fn dry_run(&self) -> anyhow::Result<()> {
        for d in self.targets {
            println!(
                "would replay {}  run {}  phase {}  {}",
                d.id,
                run_or_dash(d.run_id),
                d.phase,
                d.error
            );
        }
        let r = self.replay(None, |_| {}).await?;
        println!(
            "dry run: {} would be replayed; nothing changed",
            r.would_replay
        );
        Ok(())
    }

    /// Replays the dead letters over a connection of its own, evicts the
    /// replayed runs' cached status, removes the replayed copies from the
    /// dead-letter queues of their phases and prints what it did.
    async fn replay_and_drain(&self) -> anyhow::Result<()> {
        let conn = crate::broker::connect(self.config, "netra dlq replay").await?;
        let publisher = crate::broker::publisher::Publisher::open(&conn).await?;
        let bar = replay_progress_bar(self.targets.len());
        let mut report = self
            .replay(Some(&publisher), |n| bar.set_position(n as u64))
            .await?;
        bar.finish_and_clear();
        let cache = crate::cache::Cache::connect(self.config).await;
        replay::evict_cached(cache.as_ref(), &report.runs).await;
        let ch = conn.create_channel().await?;
        let mut phases: Vec<&str> = self.targets.iter().map(|d| d.phase.as_str()).collect();
        phases.sort_unstable();
        phases.dedup();
        for p in phases {
            report.drained += replay::drain_replayed(self.pool, &ch, self.names, p).await?;
        }
        let _ = conn.close(200, "bye".into()).await;
        println!(
            "replayed {}, already replayed {}, not replayable {}, removed {} copies from the dead-letter queues",
            report.replayed, report.skipped, report.not_replayable, report.drained
        );
        Ok(())
    }

    /// Replays (or, in a dry run, counts) the dead letters with the
    /// deployment's seal, publishing through `publisher`.
    async fn replay(
        &self,
        publisher: Option<&crate::broker::publisher::Publisher>,
        progress: impl FnMut(usize),
    ) -> anyhow::Result<replay::Report> {
        let seal = Seal::load(self.config, self.pool).await?;
        let (pool, names, targets, opts) = (self.pool, self.names, self.targets, self.opts);
        Ok(replay::run_job(pool, names, &seal, publisher, targets, opts, progress).await?)
    }
}

/// The progress bar of a replay, hidden for fewer than two dead letters.
fn replay_progress_bar(len: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "replaying {bar:40} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if len < 2 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}
