//! RabbitMQ access: connection, topology, confirmed publishing.

pub mod permissions;
pub mod publisher;
pub mod topology;

use lapin::{Connection, ConnectionProperties};
use secrecy::ExposeSecret;

use crate::{config::Config, error::InfraError};

/// Opens a connection. Errors never contain the URL (it holds a password).
pub async fn connect(config: &Config, name: &str) -> Result<Connection, InfraError> {
    connect_url(config.amqp_url.expose_secret(), name).await
}

/// Opens a connection to a URL.
pub async fn connect_url(url: &str, name: &str) -> Result<Connection, InfraError> {
    let props = ConnectionProperties::default().with_connection_name(name.to_string().into());
    Connection::connect(url, props).await.map_err(|e| {
        InfraError::Broker(format!(
            "cannot connect to RabbitMQ: {}",
            redact_error(&e.to_string())
        ))
    })
}

/// Strips anything URL-like with credentials from an error text.
fn redact_error(text: &str) -> String {
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
