//! Safe ingest on the real Postgres (issue 14, item 6): headers read by
//! name in any order and case, a missing or unknown column named, idempotent
//! re-ingest keyed by row content ("n new, m already present"), unknown
//! models refused unless priced, empty files refused, a UTF-8 BOM accepted,
//! and hostile input (NUL bytes, a huge line, garbage numbers) reported as
//! bad rows or a clear error, never a panic and never a half-written file.

use crate::common::*;
use netra::ingest::{self, Format, IngestError, Prices, Report, Target};
use sqlx::PgPool;

const AZURE_ROWS: &str = "2023-11-16 18:15:46.6805900,374,44\n\
                          2023-11-16 18:15:50.9951690,396,109\n\
                          2023-11-16 18:15:51.1234560,879,12\n";

fn target<'a>(workload: &'a str, format: Format, model: Option<&'a str>) -> Target<'a> {
    Target {
        tenant: "default",
        workload,
        format,
        model,
        max_errors: 0,
        prices: None,
    }
}

async fn run(pool: &PgPool, t: &Target<'_>, text: &[u8]) -> Result<Report, IngestError> {
    ingest::ingest(pool, t, std::io::BufReader::new(text), |_| {}).await
}

/// (input, output) tokens of a workload's rows, by time.
async fn tokens(pool: &PgPool, tenant: &str, workload: &str) -> Vec<(i32, i32)> {
    sqlx::query_as(
        "SELECT input_tokens, output_tokens FROM llm_requests \
         WHERE tenant = $1 AND workload_id = $2 ORDER BY ts, id",
    )
    .bind(tenant)
    .bind(workload)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Rows of telemetry and workloads, in all tenants.
async fn counts(pool: &PgPool) -> (i64, i64) {
    sqlx::query_as("SELECT (SELECT count(*) FROM llm_requests), (SELECT count(*) FROM workloads)")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn azure_columns_in_another_order_and_case_are_read_by_name() {
    let (config, db, pool) = fresh_db().await;
    let swapped = "timestamp,GENERATEDTOKENS,contexttokens\n\
                   2023-11-16 18:15:46.6805900,44,374\n\
                   2023-11-16 18:15:50.9951690,109,396\n";
    let t = target("az", Format::Azure, Some("gpt-4o"));
    let r = run(&pool, &t, swapped.as_bytes()).await.unwrap();
    assert_eq!((r.inserted, r.bad_rows), (2, 0));
    assert_eq!(
        tokens(&pool, "default", "az").await,
        vec![(374, 44), (396, 109)]
    );
    // The generic CSV too: shuffled, upper-case, optional columns included.
    let csv = "OUTPUT_TOKENS,Status,input_tokens,Latency_Ms,model,timestamp\n\
               7,ok,70,812.5,gpt-4o-mini,2026-01-01T00:00:00Z\n";
    let r = run(&pool, &target("gen", Format::Csv, None), csv.as_bytes())
        .await
        .unwrap();
    assert_eq!(r.inserted, 1);
    assert_eq!(tokens(&pool, "default", "gen").await, vec![(70, 7)]);
    pool.close().await;
    cleanup(&config, &db).await;
}

#[tokio::test]
async fn a_missing_or_unknown_column_is_an_error_that_names_it_and_inserts_nothing() {
    let (config, db, pool) = fresh_db().await;
    let t = target("az", Format::Azure, Some("gpt-4o"));
    let cases = [
        (
            "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46,1\n",
            "missing column `GeneratedTokens`",
        ),
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens,Region\n2023-11-16 18:15:46,1,2,eu\n",
            "unknown column `Region`",
        ),
        (
            "TIMESTAMP,ContextTokens,ContextTokens\n2023-11-16 18:15:46,1,2\n",
            "`ContextTokens` appears twice",
        ),
    ];
    for (text, want) in cases {
        let e = run(&pool, &t, text.as_bytes()).await.unwrap_err();
        assert!(matches!(e, IngestError::Header(1, _)), "{e}");
        assert!(e.to_string().contains(want), "{e}");
    }
    let csv = "timestamp,model,input_tokens\n2026-01-01T00:00:00Z,gpt-4o,1\n";
    let e = run(&pool, &target("g", Format::Csv, None), csv.as_bytes())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("missing column `output_tokens`"),
        "{e}"
    );
    assert_eq!(counts(&pool).await, (0, 0), "nothing inserted, no workload");
    pool.close().await;
    cleanup(&config, &db).await;
}

#[tokio::test]
async fn ingesting_the_same_rows_again_adds_nothing_and_says_so() {
    let (config, db, pool) = fresh_db().await;
    let t = target("az", Format::Azure, Some("gpt-4o"));
    let file = format!("TIMESTAMP,ContextTokens,GeneratedTokens\n{AZURE_ROWS}");
    let first = run(&pool, &t, file.as_bytes()).await.unwrap();
    assert_eq!((first.inserted, first.already_present), (3, 0));
    for _ in 0..2 {
        let again = run(&pool, &t, file.as_bytes()).await.unwrap();
        assert_eq!(
            (again.inserted, again.already_present, again.read),
            (0, 3, 3)
        );
        assert!(
            ingest::summary(&t, &again).contains("0 new, 3 already present"),
            "{}",
            ingest::summary(&t, &again)
        );
    }
    assert_eq!(tokens(&pool, "default", "az").await.len(), 3);
    // The same rows with the columns in another order are the same rows.
    let reordered = "GeneratedTokens,TIMESTAMP,ContextTokens\n\
                     44,2023-11-16 18:15:46.6805900,374\n\
                     5,2023-11-16 19:00:00,50\n";
    let r = run(&pool, &t, reordered.as_bytes()).await.unwrap();
    assert_eq!((r.inserted, r.already_present), (1, 1));
    assert_eq!(tokens(&pool, "default", "az").await.len(), 4);
    // Another tenant, or another workload, owns its own copy.
    let other = Target {
        tenant: "other",
        ..t.clone()
    };
    let r = run(&pool, &other, file.as_bytes()).await.unwrap();
    assert_eq!((r.inserted, r.already_present), (3, 0));
    pool.close().await;
    cleanup(&config, &db).await;
}

#[tokio::test]
async fn identical_requests_of_one_file_are_all_kept_and_deduplicated_on_reingest() {
    let (config, db, pool) = fresh_db().await;
    let t = target("g", Format::Csv, None);
    let file = "timestamp,model,input_tokens,output_tokens\n\
                2026-01-01T00:00:00Z,gpt-4o,10,5\n\
                2026-01-01T00:00:00Z,gpt-4o,10,5\n\
                2026-01-01T00:00:00Z,gpt-4o,11,5\n\
                2026-01-01T00:00:00Z,gpt-4o,10,5\n";
    let r = run(&pool, &t, file.as_bytes()).await.unwrap();
    assert_eq!((r.inserted, r.already_present), (4, 0));
    let r = run(&pool, &t, file.as_bytes()).await.unwrap();
    assert_eq!((r.inserted, r.already_present), (0, 4));
    // One more identical request in a later export is new.
    let more = format!("{file}2026-01-01T00:00:00Z,gpt-4o,10,5\n");
    let r = run(&pool, &t, more.as_bytes()).await.unwrap();
    assert_eq!((r.inserted, r.already_present), (1, 4));
    assert_eq!(tokens(&pool, "default", "g").await.len(), 5);
    pool.close().await;
    cleanup(&config, &db).await;
}

#[tokio::test]
async fn an_unknown_model_is_refused_with_the_catalog_unless_prices_are_given() {
    let (config, db, pool) = fresh_db().await;
    netra::agents::catalog::load_catalog(&pool).await.unwrap();
    let file = format!("TIMESTAMP,ContextTokens,GeneratedTokens\n{AZURE_ROWS}");
    let t = target("az", Format::Azure, Some("my-finetune"));
    let e = run(&pool, &t, file.as_bytes()).await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, IngestError::UnknownModel { .. }), "{msg}");
    assert!(
        msg.contains("`my-finetune`")
            && msg.contains("gpt-4o-mini")
            && msg.contains("--input-price"),
        "{msg}"
    );
    // A generic CSV names the line of the first unpriced row.
    let csv = "timestamp,model,input_tokens,output_tokens,cost_usd\n\
               2026-01-01T00:00:00Z,gpt-4o,10,5,\n\
               2026-01-01T00:00:01Z,mystery,10,5,0.25\n\
               2026-01-01T00:00:02Z,mystery,10,5,\n";
    let e = run(&pool, &target("g", Format::Csv, None), csv.as_bytes())
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("line 4: model `mystery`"), "{e}");
    assert_eq!(counts(&pool).await, (0, 0), "nothing inserted, no workload");
    // Given prices, every row without a recorded cost is priced with them.
    let priced = Target {
        prices: Some(Prices {
            input_per_mtok: 2.0,
            output_per_mtok: 8.0,
        }),
        ..t.clone()
    };
    let r = run(&pool, &priced, file.as_bytes()).await.unwrap();
    assert_eq!(r.inserted, 3);
    let cost: f64 = sqlx::query_scalar(
        "SELECT sum(cost_usd) FROM llm_requests WHERE workload_id = 'az' AND model = 'my-finetune'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    // (374 + 396 + 879) * 2 + (44 + 109 + 12) * 8 = 4618 USD per million.
    assert!((cost - 4618.0 / 1e6).abs() < 1e-12, "{cost}");
    // Prices that are not numbers are refused before anything is read.
    let nan = Target {
        prices: Some(Prices {
            input_per_mtok: f64::NAN,
            output_per_mtok: 1.0,
        }),
        ..t.clone()
    };
    let e = run(&pool, &nan, file.as_bytes()).await.unwrap_err();
    assert!(matches!(e, IngestError::Prices(_)), "{e}");
    pool.close().await;
    cleanup(&config, &db).await;
}

#[tokio::test]
async fn an_empty_file_is_an_error_and_a_bom_is_accepted() {
    let (config, db, pool) = fresh_db().await;
    let t = target("az", Format::Azure, Some("gpt-4o"));
    for empty in [
        &b""[..],
        b"\n\n",
        b"TIMESTAMP,ContextTokens,GeneratedTokens\n",
        b"\xEF\xBB\xBF",
    ] {
        let e = run(&pool, &t, empty).await.unwrap_err();
        assert!(matches!(e, IngestError::Empty), "{e}");
        assert!(e.to_string().contains("no data rows"), "{e}");
    }
    let e = run(&pool, &target("j", Format::Jsonl, None), b"\n")
        .await
        .unwrap_err();
    assert!(matches!(e, IngestError::Empty), "{e}");
    assert_eq!(counts(&pool).await, (0, 0), "no empty workload left behind");
    let bom = format!("\u{feff}TIMESTAMP,ContextTokens,GeneratedTokens\r\n{AZURE_ROWS}");
    let r = run(&pool, &t, bom.as_bytes()).await.unwrap();
    assert_eq!((r.inserted, r.bad_rows), (3, 0));
    let jsonl = "\u{feff}{\"timestamp\":\"2026-01-01T00:00:00Z\",\"model\":\"gpt-4o\",\"input_tokens\":1,\"output_tokens\":2}\n";
    let r = run(&pool, &target("j", Format::Jsonl, None), jsonl.as_bytes())
        .await
        .unwrap();
    assert_eq!(r.inserted, 1);
    pool.close().await;
    cleanup(&config, &db).await;
}

#[tokio::test]
async fn hostile_rows_are_reported_by_line_and_the_good_ones_kept() {
    let (config, db, pool) = fresh_db().await;
    let mut file = b"timestamp,model,input_tokens,output_tokens,latency_ms\n".to_vec();
    file.extend_from_slice(b"2026-01-01T00:00:00Z,gpt-4o,10,5,100\n"); // 2 good
    file.extend_from_slice(b"2026-01-01T00:00:01Z,gpt-4o\0,10,5,100\n"); // 3 NUL
    file.extend_from_slice(b"2026-01-01T00:00:02Z,gpt-4o,");
    file.extend(std::iter::repeat_n(b'9', 300_000)); // 4 huge
    file.extend_from_slice(b",5,100\n");
    file.extend_from_slice(b"2026-01-01T00:00:03Z,gpt-4o,-7,5,100\n"); // 5 negative
    file.extend_from_slice(b"2026-01-01T00:00:04Z,gpt-4o,10,NaN,100\n"); // 6 NaN tokens
    file.extend_from_slice(b"2026-01-01T00:00:05Z,gpt-4o,10,5,NaN\n"); // 7 NaN latency
    file.extend_from_slice(b"2026-01-01T00:00:06Z,gpt-4o,10,5,-1e3\n"); // 8 negative latency
    file.extend_from_slice(b"2026-01-01T00:00:07Z,gpt-4o,99999999999,5,1\n"); // 9 overflow
    file.extend_from_slice(b"\xFF\xFE\xFD,,,\n"); // 10 not UTF-8
    file.extend_from_slice(b"2026-01-01T00:00:08Z,gpt-4o,1,2,3,4\n"); // 11 extra field
    file.extend_from_slice(b"2026-01-01T00:00:09Z,gpt-4o,20,6,200\n"); // 12 good
    let mut t = target("h", Format::Csv, None);
    t.max_errors = 100;
    let r = run(&pool, &t, &file).await.unwrap();
    assert_eq!((r.inserted, r.read, r.bad_rows), (2, 11, 9));
    let want = [
        (3, "NUL"),
        (4, "longer than"),
        (5, "input_tokens `-7`"),
        (6, "output_tokens `NaN`"),
        (7, "latency_ms `NaN`"),
        (8, "latency_ms `-1000`"),
        (9, "input_tokens `99999999999`"),
        (10, "not UTF-8"),
        (11, "expected 5 fields, found 6"),
    ];
    for (line, reason) in want {
        let b = r.bad.iter().find(|b| b.line == line);
        assert!(
            b.is_some_and(|b| b.reason.contains(reason)),
            "line {line}: {:?}",
            r.bad
        );
    }
    assert_eq!(tokens(&pool, "default", "h").await, vec![(10, 5), (20, 6)]);
    // Past --max-errors nothing is kept.
    t.workload = "h2";
    t.max_errors = 0;
    let r = run(&pool, &t, &file).await.unwrap();
    assert!(r.aborted && r.inserted == 0 && r.bad_rows == 9);
    assert!(tokens(&pool, "default", "h2").await.is_empty());
    pool.close().await;
    cleanup(&config, &db).await;
}

#[tokio::test]
async fn hostile_headers_and_json_lines_give_clear_errors() {
    let (config, db, pool) = fresh_db().await;
    let t = target("az", Format::Azure, Some("gpt-4o"));
    let e = run(
        &pool,
        &t,
        b"TIMESTAMP,Context\0Tokens,GeneratedTokens\n1,2,3\n",
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("line 1: contains a NUL byte"), "{e}");
    let mut huge = vec![b'A'; 100_000];
    huge.push(b'\n');
    let e = run(&pool, &t, &huge).await.unwrap_err();
    assert!(e.to_string().contains("line 1: line longer than"), "{e}");
    let mut j = target("j", Format::Jsonl, None);
    j.max_errors = 10;
    let lines = concat!(
        r#"{"timestamp":"2026-01-01T00:00:00Z","model":"gpt-4o","input_tokens":1,"output_tokens":2}"#,
        "\n",
        r#"{"timestamp":"2026-01-01T00:00:01Z","model":"gpt\u0000","input_tokens":1,"output_tokens":2}"#,
        "\n",
        r#"{"timestamp":"2026-01-01T00:00:02Z","model":"gpt-4o","input_tokens":1,"output_tokens":2,"region":"eu"}"#,
        "\n",
        r#"{"timestamp":"2026-01-01T00:00:03Z","model":"gpt-4o","input_tokens":1,"output_tokens":2,"latency_ms":-5}"#,
        "\n",
        "not json\n",
    );
    let r = run(&pool, &j, lines.as_bytes()).await.unwrap();
    assert_eq!((r.inserted, r.bad_rows), (1, 4));
    let reasons: Vec<&str> = r.bad.iter().map(|b| b.reason.as_str()).collect();
    assert!(reasons[0].contains("NUL"), "{reasons:?}");
    assert!(reasons[1].contains("unknown field `region`"), "{reasons:?}");
    assert!(reasons[2].contains("latency_ms `-5`"), "{reasons:?}");
    assert!(reasons[3].contains("invalid JSON"), "{reasons:?}");
    pool.close().await;
    cleanup(&config, &db).await;
}
