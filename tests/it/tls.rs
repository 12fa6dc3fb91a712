//! One run entirely over TLS (AMQPS, Postgres with `sslmode=verify-full`,
//! `rediss://`) against the local stack's TLS listeners and private CA
//! (`deploy/local/stack env`: `NETRA_STACK_TLS_*`), and a CA that did not
//! sign the servers' certificate: a start-up error that names the service
//! and shows no password.

use crate::common::*;
use netra::{
    app::{App, StartError, StartOptions},
    config::Config,
    tls::{read_ca, CaFile},
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

fn stack_var(name: &str) -> String {
    load_stack_env();
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: restart the stack (deploy/local/stack start) to get its TLS listeners")
    })
}

fn ca(name: &str) -> CaFile {
    let path = std::path::PathBuf::from(stack_var("NETRA_STACK_TLS_CA_FILE"));
    read_ca(&path.with_file_name(name)).expect("the stack's CA files")
}

/// The TLS URLs, on this test's database.
fn over_tls(config: &mut Config, db: &str, ca: CaFile) {
    let pg = stack_var("NETRA_STACK_TLS_DATABASE_URL");
    let (base, rest) = pg.rsplit_once('/').expect("a database path");
    let query = rest.split_once('?').map(|(_, q)| q).unwrap_or_default();
    config.database_url = SecretString::from(format!("{base}/{db}?{query}"));
    config.amqp_url = SecretString::from(stack_var("NETRA_STACK_TLS_AMQP_URL"));
    config.redis_url = SecretString::from(stack_var("NETRA_STACK_TLS_REDIS_URL"));
    config.tls_ca = Some(ca);
}

#[tokio::test]
async fn a_run_goes_through_with_every_service_over_tls() {
    let (mut config, db) = test_config().await;
    over_tls(&mut config, &db, ca("ca.pem"));
    // Its own worker id: the connections of this worker, and no other test's.
    config.worker_id = format!("tls-{}", &db[db.len() - 12..]);
    let t = TestApp::start_with(config, db, None).await;
    // Postgres: this session is encrypted.
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert!(ssl, "the pool's connection is not TLS");
    // Redis: the cache connected, on the TLS-only port.
    let engine = &t.app.as_ref().expect("running").engine;
    assert!(engine.cache.is_some(), "no cache over rediss://");
    let mut replies = Replies::open(&t.config).await;
    t.publish_request(
        &json!({"message": "What is prompt caching?"}),
        Some("tls-1"),
        Some(&replies.queue),
        Some("corr-tls"),
    )
    .await;
    let (cid, body) = replies.next().await;
    assert_eq!(cid, "corr-tls");
    assert_eq!(body["status"], "completed", "{body}");
    // RabbitMQ: the worker's connections are TLS.
    let stack = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local/stack");
    let out = std::process::Command::new(stack)
        .args([
            "rabbitmqctl",
            "-q",
            "list_connections",
            "ssl",
            "client_properties",
        ])
        .output()
        .expect("rabbitmqctl");
    let listing = String::from_utf8_lossy(&out.stdout);
    let worker: Vec<&str> = listing
        .lines()
        .filter(|l| l.contains(&t.config.worker_id))
        .collect();
    assert!(!worker.is_empty(), "no connection of the worker: {listing}");
    assert!(
        worker.iter().all(|l| l.trim_start().starts_with("true")),
        "{worker:?}"
    );
    replies.close().await;
    t.finish().await;
}

async fn start_error(config: Config) -> String {
    match App::start(config, StartOptions::default()).await {
        Ok(app) => {
            app.shutdown().await;
            panic!("netra started with a CA that did not sign the servers' certificate")
        }
        Err(StartError::Tls(message)) => message,
        Err(e) => panic!("not a TLS error: {e}"),
    }
}

#[tokio::test]
async fn a_certificate_that_does_not_verify_is_a_start_error_naming_the_service() {
    let (base, db) = test_config().await;
    let password = |url: &str| {
        url.split_once("://")
            .and_then(|(_, r)| r.split_once('@'))
            .and_then(|(cred, _)| cred.rsplit_once(':'))
            .map(|(_, p)| p.to_string())
            .unwrap_or_default()
    };
    // Every service over TLS with the wrong CA: Postgres, connected first.
    let mut config = base.clone();
    over_tls(&mut config, &db, ca("other-ca.pem"));
    let pg_password = password(config.database_url.expose_secret());
    let message = start_error(config).await;
    assert!(message.starts_with("Postgres: "), "{message}");
    assert!(message.contains("NETRA_TLS_CA_FILE"), "{message}");
    assert!(!message.contains(&pg_password), "a password in {message}");
    // Postgres in the clear, RabbitMQ over TLS with the wrong CA.
    let mut config = base.clone();
    over_tls(&mut config, &db, ca("other-ca.pem"));
    config.database_url = base.database_url.clone();
    config.redis_url = base.redis_url.clone();
    let amqp_password = password(config.amqp_url.expose_secret());
    let message = start_error(config).await;
    assert!(message.starts_with("RabbitMQ: "), "{message}");
    assert!(!message.contains(&amqp_password), "a password in {message}");
    // Only Redis over TLS with the wrong CA.
    let mut config = base.clone();
    over_tls(&mut config, &db, ca("other-ca.pem"));
    config.database_url = base.database_url.clone();
    config.amqp_url = base.amqp_url.clone();
    let redis_password = password(config.redis_url.expose_secret());
    let message = start_error(config).await;
    assert!(message.starts_with("Redis: "), "{message}");
    assert!(
        !message.contains(&redis_password),
        "a password in {message}"
    );
    cleanup(&base, &db).await;
}
