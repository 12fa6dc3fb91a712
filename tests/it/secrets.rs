//! Invariant 7: secrets never appear in logs or errors.

use std::{
    io::Read,
    process::{Command, Stdio},
    time::Duration,
};

use crate::common::*;

fn password(url: &str) -> String {
    let creds = url.split("://").nth(1).unwrap().split('@').next().unwrap();
    creds.split(':').nth(1).unwrap().to_string()
}

#[tokio::test]
async fn passwords_stay_out_of_debug_output_errors_and_logs() {
    let (config, db) = test_config().await;
    let secrets: Vec<String> = ["NETRA_AMQP_URL", "NETRA_DATABASE_URL", "NETRA_REDIS_URL"]
        .iter()
        .map(|v| password(&std::env::var(v).unwrap()))
        .collect();
    assert!(
        secrets.iter().all(|s| s.len() >= 8),
        "the stack's passwords are set"
    );
    let debug = format!("{config:?}");
    for s in &secrets {
        assert!(!debug.contains(s.as_str()), "Config Debug shows a password");
    }
    // Connection errors with a password in the URL do not echo it.
    let bad_amqp = "amqp://netra:hunter2-secret@127.0.0.1:1/%2f";
    let err = netra::broker::connect_url(bad_amqp, "x")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(!err.contains("hunter2-secret"), "{err}");
    let bad_pg = std::env::var("NETRA_DATABASE_URL")
        .unwrap()
        .replace(&secrets[1], "hunter2-secret");
    let err = netra::store::connect_url(&bad_pg, 1)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(!err.contains("hunter2-secret"), "{err}");

    // A debug-level run of `netra serve` logs nothing secret.
    let mut child = Command::new(env!("CARGO_BIN_EXE_netra"))
        .args(["serve", "--no-http"])
        .env("NETRA_DATABASE_URL", database_url(&config))
        .env("NETRA_NAMESPACE", &config.namespace)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pool = netra::store::connect_url(&database_url(&config), 1)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    // Wait until it has migrated and connected (its tables exist and a request flows).
    loop {
        if sqlx::query("SELECT 1 FROM runs LIMIT 1")
            .execute(&pool)
            .await
            .is_ok()
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Publish once the worker has declared its topology (unroutable before).
    let conn = netra::broker::connect(&config, "secrets test")
        .await
        .unwrap();
    let p = netra::broker::publisher::Publisher::open(&conn)
        .await
        .unwrap();
    let msg = netra::broker::publisher::Outgoing {
        exchange: String::new(),
        routing_key: format!("{}.requests", config.namespace),
        body: br#"{"message": "What is caching?"}"#.to_vec(),
        ..Default::default()
    };
    while p.publish_routed(&msg).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "worker never declared its queues"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = conn.close(200, "bye".into()).await;
    let t = crate::common::TestApp {
        app: None,
        config: config.clone(),
        db: db.clone(),
        pool: pool.clone(),
        // Only a view for waiting: this test cleans up itself.
        cleaned: true,
    };
    t.wait_all(1, &["completed"]).await;
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert!(status.success());
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        out.contains("connected; consuming"),
        "the worker logged its start"
    );
    for s in &secrets {
        assert!(!out.contains(s.as_str()), "a password reached the logs");
    }
    pool.close().await;
    cleanup(&config, &db).await;
}

/// Malformed connection URLs holding a password: `netra migrate` refuses
/// them naming the variable, and the password appears nowhere in its output.
#[test]
fn malformed_url_settings_name_the_variable_and_never_show_the_password() {
    const SECRET: &str = "hunter2xyz";
    let admin = admin_url();
    // Should a value pass the check by mistake, `migrate` must still touch
    // no real database: the other settings point at one that does not exist.
    let (base, _) = admin.rsplit_once('/').unwrap();
    let no_db = format!("{base}/netra_no_such_db_{}", uuid::Uuid::new_v4().simple());
    let cases: &[(&str, &[&str])] = &[
        (
            "NETRA_AMQP_URL",
            &[
                "netra:hunter2xyz@127.0.0.1:5682/%2f",
                "amqp://netra:hunter2xyz@127.0.0.1:notaport/%2f",
                "amqp://netra:hunter2xyz@127.0.0.1:99999/%2f",
                "amqp://u:hunter2xyz@[::1/x",
                "http://netra:hunter2xyz@127.0.0.1:5682/%2f",
            ],
        ),
        (
            "NETRA_DATABASE_URL",
            &[
                "netra:hunter2xyz@127.0.0.1:5442/netra",
                "postgres://netra:hunter2xyz@127.0.0.1:notaport/netra",
                "postgres://netra:hunter2xyz@127.0.0.1:99999/netra",
                "postgres://u:hunter2xyz@[::1/x",
                "postgres://netra:hunter2xyz@127.0.0.1:5442/netra?sslmode=bogus",
                "mysql://netra:hunter2xyz@127.0.0.1:5442/netra",
            ],
        ),
        (
            "NETRA_REDIS_URL",
            &[
                ":hunter2xyz@127.0.0.1:6390/0",
                "redis://:hunter2xyz@127.0.0.1:notaport/0",
                "redis://:hunter2xyz@127.0.0.1:99999999/0",
                "redis://u:hunter2xyz@[::1/x",
                "redis://:hunter2xyz@127.0.0.1:6390/notadb",
                "http://:hunter2xyz@127.0.0.1:6390/0",
            ],
        ),
    ];
    for (var, values) in cases {
        for value in *values {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_netra"));
            cmd.arg("migrate")
                .env("NETRA_DATABASE_URL", &no_db)
                .env(var, value)
                .env("RUST_LOG", "debug");
            let out = cmd.output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!out.status.success(), "{var}={value} was accepted: {text}");
            assert!(text.contains(var), "{var}={value}: not named in {text:?}");
            assert!(
                !text.contains(SECRET),
                "{var}={value}: the password was shown: {text:?}"
            );
        }
    }
}
