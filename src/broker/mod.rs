//! RabbitMQ access: connection, topology, confirmed publishing.

pub mod permissions;
pub mod publisher;
pub mod topology;

use lapin::{Connection, ConnectionProperties};
use secrecy::ExposeSecret;

use crate::{config::Config, error::InfraError};

/// Opens a connection (TLS for `amqps://`, trusting `NETRA_TLS_CA_FILE`
/// too). Errors never contain the URL (it holds a password).
pub async fn connect(config: &Config, name: &str) -> Result<Connection, InfraError> {
    connect_url_tls(
        config.amqp_url.expose_secret(),
        name,
        config.tls_ca.as_ref(),
    )
    .await
}

/// Opens a connection to a URL (TLS with the system's roots for
/// `amqps://`).
pub async fn connect_url(url: &str, name: &str) -> Result<Connection, InfraError> {
    connect_url_tls(url, name, None).await
}

/// Opens a connection to a URL, trusting `ca` beside the system's roots.
pub async fn connect_url_tls(
    url: &str,
    name: &str,
    ca: Option<&crate::tls::CaFile>,
) -> Result<Connection, InfraError> {
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
    connect.map_err(|e| {
        InfraError::Broker(format!(
            "cannot connect to RabbitMQ: {}",
            redact_error(&e.to_string())
        ))
    })
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
