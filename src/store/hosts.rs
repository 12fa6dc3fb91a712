//! Several Postgres hosts in one `NETRA_DATABASE_URL`, and the writable one.
//!
//! `NETRA_DATABASE_URL` may name several hosts the way libpq does:
//! `postgres://user:pw@10.0.0.1:5432,10.0.0.2:5432/netra?sslmode=verify-full`
//! (IPv6 in brackets, `[::1]:5432`; the port defaults to 5432). The
//! credentials, the database and the query are shared; each host gets the
//! single-host URL that sqlx parses ([`Hosts::parse`]).
//! `target_session_attrs=read-write` (or `primary`) is accepted and
//! stripped: netra always writes, so it always wants the primary. A URL
//! with one host is used as it is (that parameter stripped).
//!
//! With several hosts, every pool made from the configuration starts on the
//! host that is not in recovery ([`Hosts::writable`]) and is watched
//! ([`super::failover`]):
//!
//! - refuses a new connection to a server in recovery (its `after_connect`
//!   fails, so a standby is never written to, even for a moment after a
//!   switch; the caller sees an outage);
//! - has its connections opened before the last switch closed when they
//!   are acquired or released (`before_acquire` and `after_release` compare
//!   their age with the time of the switch);
//! - is watched, with every other pool of the same URL in the process, by
//!   one task that asks the current host `SELECT pg_is_in_recovery()` every
//!   second on a kept connection. When the host fails or is in recovery, the
//!   task looks for the writable host among all of them and, when that is
//!   another one, points every pool at it (`Pool::set_connect_options`) and
//!   logs the warning `database primary moved` with both hosts (`host:port`
//!   only). The task ends once all its pools are closed.
//!
//! Host lists, their [`Debug`](std::fmt::Debug) and every error here show
//! `host:port` only, never the credentials.

use std::time::Duration;

use secrecy::SecretString;
use sqlx::{
    postgres::{PgConnectOptions, PgConnection},
    ConnectOptions, Connection,
};

use super::Error;

/// The port of a host written without one.
pub const DEFAULT_PORT: u16 = 5432;

/// How long finding out whether one host is writable may take (connecting
/// included).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How often the watcher asks the current host whether it is still the
/// primary.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Why a database URL was refused. The text names the host by its position
/// in the list, never the URL (it holds a password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostsError {
    /// Not `postgres://` or `postgresql://`.
    #[error("not a postgres:// or postgresql:// URL")]
    Scheme,
    /// An empty element in the host list (`h1,,h2`, `h1,`).
    #[error("host {0} of the host list is empty")]
    EmptyHost(usize),
    /// An IPv6 address without its brackets, or with one missing.
    #[error("host {0} of the host list is not a valid IPv6 address; write it in brackets, as in [::1]:5432")]
    Ipv6(usize),
    /// A port that is not a number from 1 to 65535.
    #[error("host {0} of the host list has a port that is not a number from 1 to 65535")]
    Port(usize),
    /// `host`, `hostaddr` or `port` in the query of a multi-host URL.
    #[error("a URL with several hosts names them only before the path (no host, hostaddr or port parameter)")]
    HostParameter,
    /// `target_session_attrs` other than `read-write` or `primary`.
    #[error(
        "target_session_attrs must be read-write (or primary): netra always uses the writable host"
    )]
    SessionAttrs,
    /// A URL with one host that sqlx does not accept.
    #[error("not a valid URL")]
    Invalid,
    /// The single-host URL of this host of the list is not one sqlx
    /// accepts.
    #[error("the URL of host {0} of the host list is not valid")]
    InvalidHost(usize),
}

/// One host of the database URL: its `host:port`, its single-host URL and
/// the connect options parsed from it (statement logging off).
#[derive(Clone)]
pub struct Host {
    label: String,
    url: SecretString,
    options: PgConnectOptions,
}

impl Host {
    /// `host:port` (`[::1]:5432` for IPv6; the socket path for a Unix
    /// socket): no credentials, fit for logs.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The single-host URL of this host (with the password).
    pub fn url(&self) -> &SecretString {
        &self.url
    }

    /// The connect options of this host.
    pub fn options(&self) -> &PgConnectOptions {
        &self.options
    }
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Host").field(&self.label).finish()
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}

/// The hosts of a database URL, in the order written; never empty.
#[derive(Clone)]
pub struct Hosts {
    hosts: Vec<Host>,
}

impl std::fmt::Debug for Hosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.hosts.iter().map(|h| &h.label))
            .finish()
    }
}

impl std::fmt::Display for Hosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.labels().join(","))
    }
}

impl Hosts {
    /// Splits a database URL into its hosts (see the module's text). A URL
    /// with one host is parsed as it is, `target_session_attrs` stripped.
    pub fn parse(url: &str) -> Result<Self, HostsError> {
        let scheme_len = ["postgres://", "postgresql://"]
            .iter()
            .find(|s| url.starts_with(**s))
            .map(|s| s.len())
            .ok_or(HostsError::Scheme)?;
        let (scheme, rest) = url.split_at(scheme_len);
        // The authority ends at the path, the query or the fragment; its
        // credentials at its last '@' (as the URL parser sqlx uses reads it).
        let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
        let (userinfo, host_list) = match authority.rfind('@') {
            Some(at) => authority.split_at(at + 1),
            None => ("", authority),
        };
        let tail = strip_session_attrs(tail)?;
        if !host_list.contains(',') {
            let single = format!("{scheme}{authority}{tail}");
            let options = parse_options(&single).ok_or(HostsError::Invalid)?;
            let label = match options.get_socket() {
                Some(socket) => socket.display().to_string(),
                None => format!("{}:{}", options.get_host(), options.get_port()),
            };
            let hosts = vec![Host {
                label,
                url: SecretString::from(single),
                options,
            }];
            return Ok(Self { hosts });
        }
        if names_a_host(&tail) {
            return Err(HostsError::HostParameter);
        }
        let mut hosts = Vec::new();
        for (k, element) in host_list.split(',').enumerate() {
            let (host, port) = split_host_port(element, k + 1)?;
            let label = format!("{host}:{port}");
            let single = format!("{scheme}{userinfo}{label}{tail}");
            let options = parse_options(&single).ok_or(HostsError::InvalidHost(k + 1))?;
            hosts.push(Host {
                label,
                url: SecretString::from(single),
                options,
            });
        }
        Ok(Self { hosts })
    }

    /// The number of hosts (at least 1).
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Always false: a host list has at least one host.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// True when the URL names several hosts (and the pools are watched).
    pub fn is_multi(&self) -> bool {
        self.hosts.len() > 1
    }

    /// The first host (the only one of a single-host URL).
    pub fn first(&self) -> &Host {
        &self.hosts[0]
    }

    /// The host at `index`.
    pub fn get(&self, index: usize) -> Option<&Host> {
        self.hosts.get(index)
    }

    /// The hosts, in the order written.
    pub fn iter(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter()
    }

    /// Each host's `host:port`.
    pub fn labels(&self) -> Vec<&str> {
        self.hosts.iter().map(|h| h.label.as_str()).collect()
    }

    /// The same hosts with `f` applied to each one's connect options (the
    /// TLS CA, for one).
    pub fn map_options(mut self, f: impl Fn(PgConnectOptions) -> PgConnectOptions) -> Self {
        for host in &mut self.hosts {
            host.options = f(host.options.clone());
        }
        self
    }

    /// The index of the first host, in the order written, that answers
    /// `SELECT pg_is_in_recovery()` with false, each host given
    /// [`PROBE_TIMEOUT`]. None writable is an [`Error::Outage`] that lists
    /// each host (`host:port`) with why it was not.
    pub async fn writable(&self) -> Result<usize, Error> {
        let mut failures = Vec::new();
        for (i, host) in self.hosts.iter().enumerate() {
            match probe(&host.options).await {
                Ok(false) => return Ok(i),
                Ok(true) => failures.push(format!("{}: a standby (in recovery)", host.label)),
                Err(reason) => failures.push(format!("{}: {reason}", host.label)),
            }
        }
        Err(Error::Outage(format!(
            "no writable Postgres host among {}: {}",
            self.hosts.len(),
            failures.join("; ")
        )))
    }
}

/// Parses a single-host URL with sqlx (statement logging off). sqlx's
/// message is dropped: it may quote the URL.
fn parse_options(url: &str) -> Option<PgConnectOptions> {
    url.parse::<PgConnectOptions>()
        .ok()
        .map(|o| o.disable_statement_logging())
}

/// `tail` (path, query, fragment) without `target_session_attrs`, which
/// must ask for the writable host if present.
fn strip_session_attrs(tail: &str) -> Result<String, HostsError> {
    let (before_fragment, fragment) = tail.split_at(tail.find('#').unwrap_or(tail.len()));
    let Some((path, query)) = before_fragment.split_once('?') else {
        return Ok(tail.to_string());
    };
    let mut kept = Vec::new();
    let mut found = false;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "target_session_attrs" {
            if !(value.eq_ignore_ascii_case("read-write") || value.eq_ignore_ascii_case("primary"))
            {
                return Err(HostsError::SessionAttrs);
            }
            found = true;
        } else {
            kept.push(pair);
        }
    }
    if !found {
        return Ok(tail.to_string());
    }
    let mut out = path.to_string();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    out.push_str(fragment);
    Ok(out)
}

/// True when the query sets the host or port, which a multi-host URL gives
/// in its authority instead.
fn names_a_host(tail: &str) -> bool {
    let before_fragment = tail.split('#').next().unwrap_or("");
    let Some((_, query)) = before_fragment.split_once('?') else {
        return false;
    };
    query.split('&').any(|pair| {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        matches!(key, "host" | "hostaddr" | "port")
    })
}

/// `host[:port]` or `[v6][:port]`, the `n`th of the host list.
fn split_host_port(element: &str, n: usize) -> Result<(&str, u16), HostsError> {
    let (host, port) = if element.starts_with('[') {
        let close = element.find(']').ok_or(HostsError::Ipv6(n))?;
        let (host, after) = element.split_at(close + 1);
        if host.len() == 2 {
            return Err(HostsError::Ipv6(n));
        }
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(after.strip_prefix(':').ok_or(HostsError::Port(n))?),
            ),
        }
    } else if element.matches(':').count() > 1 {
        return Err(HostsError::Ipv6(n));
    } else {
        match element.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (element, None),
        }
    };
    if host.is_empty() {
        return Err(HostsError::EmptyHost(n));
    }
    let port = match port {
        None | Some("") => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or(HostsError::Port(n))?,
    };
    Ok((host, port))
}

/// Whether a server is in recovery (a standby).
pub(super) async fn in_recovery(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()")
        .fetch_one(conn)
        .await
}

/// Connects once and asks whether the server is in recovery; the error is
/// sqlx's text (which quotes no URL), or the timeout.
async fn probe(options: &PgConnectOptions) -> Result<bool, String> {
    let attempt = async {
        let mut conn = options.connect().await?;
        let answer = in_recovery(&mut conn).await;
        let _ = conn.close().await;
        answer
    };
    match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(crate::broker::redact_error(&e.to_string())),
        Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn hosts(url: &str) -> Hosts {
        Hosts::parse(url).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn one_host_is_used_as_written() {
        let h = hosts("postgres://netra:pw@127.0.0.1:5442/netra?sslmode=disable");
        assert!(!h.is_multi());
        assert_eq!(h.labels(), ["127.0.0.1:5442"]);
        assert_eq!(
            h.first().url().expose_secret(),
            "postgres://netra:pw@127.0.0.1:5442/netra?sslmode=disable"
        );
        let h = hosts("postgresql://db.example/netra");
        assert_eq!(h.labels(), ["db.example:5432"]);
    }

    #[test]
    fn several_hosts_share_credentials_database_and_query() {
        let h = hosts(
            "postgres://netra:p%40ss@127.0.0.1:5442,127.0.0.1:5443/netra?sslmode=disable&application_name=w",
        );
        assert!(h.is_multi());
        assert_eq!(h.labels(), ["127.0.0.1:5442", "127.0.0.1:5443"]);
        let urls: Vec<&str> = h.iter().map(|h| h.url().expose_secret()).collect();
        assert_eq!(
            urls,
            [
                "postgres://netra:p%40ss@127.0.0.1:5442/netra?sslmode=disable&application_name=w",
                "postgres://netra:p%40ss@127.0.0.1:5443/netra?sslmode=disable&application_name=w",
            ]
        );
        let second = h.get(1).map(Host::options);
        assert_eq!(second.map(|o| o.get_port()), Some(5443));
        assert_eq!(second.map(|o| o.get_host()), Some("127.0.0.1"));
        assert_eq!(second.and_then(|o| o.get_database()), Some("netra"));
        assert_eq!(second.map(|o| o.get_username()), Some("netra"));
        assert!(matches!(
            second.map(|o| o.get_ssl_mode()),
            Some(sqlx::postgres::PgSslMode::Disable)
        ));
    }

    #[test]
    fn ports_default_and_ipv6_goes_in_brackets() {
        let h = hosts("postgres://u:pw@[::1]:5442,db2,[fe80::2]/netra");
        assert_eq!(h.labels(), ["[::1]:5442", "db2:5432", "[fe80::2]:5432"]);
        assert_eq!(h.first().options().get_port(), 5442);
        assert_eq!(
            h.first().url().expose_secret(),
            "postgres://u:pw@[::1]:5442/netra"
        );
        // No credentials, no path.
        let h = hosts("postgres://h1:1,h2:2");
        assert_eq!(
            h.get(1).map(|h| h.url().expose_secret()),
            Some("postgres://h2:2")
        );
    }

    #[test]
    fn target_session_attrs_is_accepted_and_stripped() {
        let h = hosts(
            "postgres://u:pw@h1:5442,h2:5443/netra?target_session_attrs=read-write&sslmode=disable",
        );
        for host in h.iter() {
            let url = host.url().expose_secret();
            assert!(!url.contains("target_session_attrs"), "{url}");
            assert!(url.ends_with("/netra?sslmode=disable"), "{url}");
        }
        let h = hosts("postgres://u:pw@h1/netra?target_session_attrs=primary");
        assert_eq!(h.first().url().expose_secret(), "postgres://u:pw@h1/netra");
        assert_eq!(
            Hosts::parse("postgres://u:pw@h1,h2/netra?target_session_attrs=any").err(),
            Some(HostsError::SessionAttrs)
        );
    }

    #[test]
    fn malformed_host_lists_are_refused_without_the_value() {
        let cases = [
            ("mysql://u:hunter2@h1,h2/db", HostsError::Scheme),
            ("postgres://u:hunter2@h1,,h2/db", HostsError::EmptyHost(2)),
            ("postgres://u:hunter2@h1,/db", HostsError::EmptyHost(2)),
            ("postgres://u:hunter2@h1,:5443/db", HostsError::EmptyHost(2)),
            ("postgres://u:hunter2@h1,h2:x/db", HostsError::Port(2)),
            ("postgres://u:hunter2@h1:0,h2/db", HostsError::Port(1)),
            ("postgres://u:hunter2@h1:70000,h2/db", HostsError::Port(1)),
            ("postgres://u:hunter2@h1,[::1/db", HostsError::Ipv6(2)),
            ("postgres://u:hunter2@h1,::1:5432/db", HostsError::Ipv6(2)),
            ("postgres://u:hunter2@h1,[::1]5432/db", HostsError::Port(2)),
            (
                "postgres://u:hunter2@h1,h2/db?port=5",
                HostsError::HostParameter,
            ),
            ("postgres://u:hunter2@h1,h 2/db", HostsError::InvalidHost(2)),
            ("postgres://u:hunter2@h:notaport/db", HostsError::Invalid),
        ];
        for (url, expected) in cases {
            let e = Hosts::parse(url).err();
            assert_eq!(e.as_ref(), Some(&expected), "{url}");
            let text = format!("{} {:?}", expected, e);
            assert!(!text.contains("hunter2"), "{text}");
        }
    }

    #[test]
    fn debug_and_display_show_no_password() {
        let h = hosts("postgres://netra:hunter2@h1:5442,h2:5443/netra");
        let text = format!("{h:?} {h} {:?} {}", h.first(), h.first());
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("h1:5442") && text.contains("h2:5443"),
            "{text}"
        );
        // The password is kept for connecting.
        assert_eq!(h.first().options().get_username(), "netra");
        assert!(h
            .first()
            .url()
            .expose_secret()
            .contains("netra:hunter2@h1:5442"));
    }
}
