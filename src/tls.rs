//! TLS to the services (docs/DESIGN.md "TLS"). AMQPS (`amqps://` in
//! `NETRA_AMQP_URL`), Postgres (`sslmode=verify-full` in
//! `NETRA_DATABASE_URL`) and Redis (`rediss://` in `NETRA_REDIS_URL`) are
//! spoken with rustls (each `amqps://` address of a list of broker nodes
//! is checked); servers are verified against the system's roots
//! plus, for a private CA, the certificates of `NETRA_TLS_CA_FILE` (PEM).
//!
//! A server whose certificate does not verify is a start-up error that
//! names the service ([`check_services`]), not a silent retry loop or a
//! "degraded" cache: the setting is wrong, and waiting will not fix it.
//! Errors carry no URL and no password.

use std::path::{Path, PathBuf};

use lapin::tcp::OwnedTLSConfig;
use secrecy::ExposeSecret;

use crate::config::{Config, ConfigError};

/// The CA certificates of `NETRA_TLS_CA_FILE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFile {
    /// Where they were read from.
    pub path: PathBuf,
    /// The file's PEM text.
    pub pem: String,
}

/// Reads `NETRA_TLS_CA_FILE`, if set: a readable PEM file with at least one
/// certificate.
pub fn ca_from_env() -> Result<Option<CaFile>, ConfigError> {
    match std::env::var_os("NETRA_TLS_CA_FILE") {
        None => Ok(None),
        Some(p) if p.is_empty() => Ok(None),
        Some(p) => read_ca(Path::new(&p)).map(Some),
    }
}

/// Reads a CA file (the error names the setting and the path, which is no
/// secret).
pub fn read_ca(path: &Path) -> Result<CaFile, ConfigError> {
    let bad = |reason: String| ConfigError {
        var: "NETRA_TLS_CA_FILE",
        reason,
    };
    let pem = std::fs::read_to_string(path)
        .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(bad(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(CaFile {
        path: path.to_path_buf(),
        pem,
    })
}

/// The TLS settings of an AMQP connection: the CA file's certificates
/// beside the system's roots.
pub fn amqp_config(ca: Option<&CaFile>) -> OwnedTLSConfig {
    OwnedTLSConfig {
        identity: None,
        cert_chain: ca.map(|c| c.pem.clone()),
    }
}

/// A Redis client for `url`; with a CA file and `rediss://`, it trusts that
/// CA (the system's roots otherwise).
pub fn redis_client(url: &str, ca: Option<&CaFile>) -> redis::RedisResult<redis::Client> {
    match ca {
        Some(ca) if url.starts_with("rediss://") => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.pem.clone().into_bytes()),
            },
        ),
        _ => redis::Client::open(url),
    }
}

/// Whether an error's text says a TLS handshake or certificate check
/// failed (rustls, through lapin, sqlx or redis).
pub fn is_certificate_error(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "certificate",
        "unknownissuer",
        "tls handshake",
        "invalid peer",
        "notvalidforname",
        "invalid dns",
    ]
    .iter()
    .any(|k| t.contains(k))
}

/// The start-up error of a service whose certificate did not verify.
fn refused(service: &str, error: &str, hint: &str) -> String {
    format!("{service}: the server's TLS certificate did not verify ({error}); {hint}")
}

const HINT: &str = "check NETRA_TLS_CA_FILE (the CA that signed the server's certificate) and that the URL's host is a name in the certificate";

/// For each service whose URL asks for TLS, one connection at start: a
/// certificate that does not verify is an error naming the service. Other
/// failures (the service is down) are left to the usual reconnects.
pub async fn check_services(config: &Config) -> Result<(), String> {
    let ca = config.tls_ca.as_ref();
    let amqps: Vec<&str> = config
        .amqp_urls()
        .into_iter()
        .filter(|u| u.starts_with("amqps://"))
        .collect();
    for amqp in &amqps {
        match crate::broker::connect_url_tls(amqp, "netra tls check", ca).await {
            // Closed at once (a dropped connection is logged by the broker
            // as closed unexpectedly).
            Ok(conn) => {
                let _ = conn.close(200, "tls checked".into()).await;
            }
            Err(e) if is_certificate_error(&e.to_string()) => {
                // With several broker addresses, the one that failed (by
                // host and port only).
                let service = match amqp_host(amqp) {
                    Some(host) if config.amqp_urls().len() > 1 => format!("RabbitMQ at {host}"),
                    _ => "RabbitMQ".to_string(),
                };
                return Err(refused(&service, &e.to_string(), HINT));
            }
            Err(_) => {}
        }
    }
    let redis = config.redis_url.expose_secret();
    if redis.starts_with("rediss://") {
        let client = redis_client(redis, ca).map_err(|e| {
            refused(
                "Redis",
                &crate::broker::redact_error(&e.to_string()),
                "check NETRA_TLS_CA_FILE",
            )
        })?;
        let attempt = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.get_multiplexed_async_connection(),
        )
        .await;
        if let Ok(Err(e)) = attempt {
            let text = crate::broker::redact_error(&e.to_string());
            if is_certificate_error(&text) {
                return Err(refused("Redis", &text, HINT));
            }
        }
    }
    Ok(())
}

/// `host:port` of an AMQP URL (no credentials).
fn amqp_host(url: &str) -> Option<String> {
    let uri = url.parse::<lapin::uri::AMQPUri>().ok()?;
    Some(format!("{}:{}", uri.authority.host, uri.authority.port))
}

/// The start-up error of Postgres, when its failure is a certificate that
/// did not verify (Postgres is connected to at start anyway).
pub fn postgres_refusal(error: &str) -> Option<String> {
    is_certificate_error(error).then(|| refused("Postgres", error, HINT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = std::env::temp_dir().join(format!("netra-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        let e = read_ca(&empty).unwrap_err();
        assert_eq!(e.var, "NETRA_TLS_CA_FILE");
        assert!(e.reason.contains("no PEM certificate"), "{}", e.reason);
        let missing = read_ca(&dir.join("missing.pem")).unwrap_err();
        assert!(missing.reason.contains("cannot read"), "{}", missing.reason);
        let good = dir.join("ca.pem");
        std::fs::write(
            &good,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(read_ca(&good).unwrap().pem.contains("BEGIN CERTIFICATE"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn certificate_failures_are_told_apart_from_outages() {
        assert!(is_certificate_error(
            "invalid peer certificate: UnknownIssuer"
        ));
        assert!(!is_certificate_error("Connection refused (os error 111)"));
        let text = refused("RabbitMQ", "invalid peer certificate: UnknownIssuer", HINT);
        assert!(text.starts_with("RabbitMQ: "));
    }
}
