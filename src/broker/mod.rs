//! RabbitMQ access: connection, topology, confirmed publishing.
//!
//! `NETRA_AMQP_URL` may list several broker nodes, comma-separated; a
//! connection goes to the first of them that accepts it, starting after the
//! address tried last ([`connect`]), so the serve loop's reconnect (which
//! declares the topology again) moves to another node when one goes away.

pub mod permissions;
pub mod publisher;
pub mod topology;

use std::sync::atomic::{AtomicUsize, Ordering};

use lapin::{Connection, ConnectionProperties};

use crate::{
    config::{redact_url, Config},
    error::InfraError,
};

/// The broker address the next connection tries first: the one after the
/// address that was tried last (used or failed), process-wide, so that a
/// reconnect after a node went away lands on another node.
static NEXT_ADDRESS: AtomicUsize = AtomicUsize::new(0);

/// Opens a connection (TLS for `amqps://`, trusting `NETRA_TLS_CA_FILE`
/// too) to one of the addresses of `NETRA_AMQP_URL` (see
/// [`connect_url_tls`]). Errors never contain a password.
pub async fn connect(config: &Config, name: &str) -> Result<Connection, InfraError> {
    connect_any(&config.amqp_urls(), name, config.tls_ca.as_ref()).await
}

/// Opens a connection to a URL, or to one of a comma-separated list (TLS
/// with the system's roots for `amqps://`).
pub async fn connect_url(url: &str, name: &str) -> Result<Connection, InfraError> {
    connect_url_tls(url, name, None).await
}

/// Opens a connection to a URL, trusting `ca` beside the system's roots.
/// `url` may be a comma-separated list of URLs (several broker nodes):
/// they are tried in turn, from the one after the address tried last in
/// this process ([`attempt_order`]), and the first connection that opens is
/// returned. When all fail, the error lists each address (its password
/// replaced by `***`) with its reason.
pub async fn connect_url_tls(
    url: &str,
    name: &str,
    ca: Option<&crate::tls::CaFile>,
) -> Result<Connection, InfraError> {
    connect_any(&crate::config::amqp_urls(url), name, ca).await
}

/// The order in which `n` addresses are tried when the first to try is
/// `start` (taken modulo `n`): `start`, `start + 1`, …, wrapping around.
pub fn attempt_order(start: usize, n: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    (0..n).map(|k| (start % n + k) % n).collect()
}

/// Tries `urls` in turn (see [`connect_url_tls`]).
async fn connect_any(
    urls: &[&str],
    name: &str,
    ca: Option<&crate::tls::CaFile>,
) -> Result<Connection, InfraError> {
    match urls {
        [] => Err(InfraError::Broker(
            "cannot connect to RabbitMQ: no address (NETRA_AMQP_URL is empty)".into(),
        )),
        [url] => open(url, name, ca)
            .await
            .map_err(|reason| InfraError::Broker(format!("cannot connect to RabbitMQ: {reason}"))),
        _ => {
            let mut failures = Vec::new();
            for i in attempt_order(NEXT_ADDRESS.load(Ordering::Relaxed), urls.len()) {
                NEXT_ADDRESS.store(i + 1, Ordering::Relaxed);
                let address = redact_url(urls[i]);
                match open(urls[i], name, ca).await {
                    Ok(conn) => return Ok(conn),
                    Err(reason) => {
                        tracing::warn!(%address, error = %reason, "cannot connect to this RabbitMQ address; trying the next");
                        failures.push(format!("{address}: {reason}"));
                    }
                }
            }
            Err(InfraError::Broker(format!(
                "cannot connect to RabbitMQ at any of its {} addresses: {}",
                urls.len(),
                failures.join("; ")
            )))
        }
    }
}

/// Opens a connection to one URL; the error is lapin's text, redacted.
async fn open(
    url: &str,
    name: &str,
    ca: Option<&crate::tls::CaFile>,
) -> Result<Connection, String> {
    let props = ConnectionProperties::default().with_connection_name(name.to_string().into());
    let connect = match ca {
        Some(ca) => match lapin::runtime::default_runtime() {
            Ok(runtime) => {
                Connection::connect_with_config(
                    url,
                    props,
                    crate::tls::amqp_config(Some(ca)),
                    runtime,
                )
                .await
            }
            Err(e) => Err(e),
        },
        None => Connection::connect(url, props).await,
    };
    connect.map_err(|e| redact_error(&e.to_string()))
}

/// Strips anything URL-like with credentials from an error text.
pub(crate) fn redact_error(text: &str) -> String {
    text.split_whitespace()
        .map(|w| {
            if w.contains("://") && w.contains('@') {
                crate::config::redact_url(w)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_tried_from_the_start_index_around() {
        assert_eq!(attempt_order(0, 3), [0, 1, 2]);
        assert_eq!(attempt_order(1, 3), [1, 2, 0]);
        assert_eq!(attempt_order(2, 3), [2, 0, 1]);
        // The index keeps counting past the end (one after the last).
        assert_eq!(attempt_order(3, 3), [0, 1, 2]);
        assert_eq!(attempt_order(7, 3), [1, 2, 0]);
        assert_eq!(attempt_order(5, 1), [0]);
        assert!(attempt_order(0, 0).is_empty());
    }

    #[tokio::test]
    async fn all_addresses_failing_lists_each_without_its_password() {
        // Ports 1 and 2 on the loopback refuse at once.
        let urls = "amqp://netra:hunter2@127.0.0.1:1/%2f, amqp://netra:hunter3@127.0.0.1:2/%2f";
        let e = connect_url(urls, "test").await.err().map(|e| e.to_string());
        let text = e.unwrap_or_default();
        assert!(
            !text.contains("hunter2") && !text.contains("hunter3"),
            "{text}"
        );
        assert!(
            text.contains("amqp://netra:***@127.0.0.1:1/%2f: "),
            "{text}"
        );
        assert!(
            text.contains("amqp://netra:***@127.0.0.1:2/%2f: "),
            "{text}"
        );
        assert!(text.contains("any of its 2 addresses"), "{text}");
    }
}
