//! The stated goal decides the plan: the same workload (an Azure-style
//! trace: timestamps and tokens only) asked about cost, latency, quality
//! and throughput gets four different sets of recommendations, each
//! answering its goal, and lists what it left out with the reason.

use crate::{agents::ingest_azure_trace, common::*};
use netra::agents::catalog::load_catalog;
use serde_json::{json, Value};

fn kinds(report: &Value) -> Vec<String> {
    let mut k: Vec<String> = report["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_string())
        .collect();
    k.sort();
    k.dedup();
    k
}

#[tokio::test]
async fn cost_latency_quality_and_throughput_goals_get_different_plans() {
    let t = TestApp::start().await;
    load_catalog(&t.pool).await.unwrap();
    ingest_azure_trace(&t.pool, "conv", 1500, 14).await;
    let asks = [
        ("cost", "Cut the cost of workload conv"),
        ("latency", "Reduce the latency of workload conv"),
        ("quality", "Improve the quality of workload conv"),
        ("throughput", "Optimize the throughput of workload conv"),
    ];
    for (goal, msg) in asks {
        t.publish_request(&json!({"message": msg}), Some(goal), None, Some(goal))
            .await;
    }
    let runs = t.wait_all(4, &["completed"]).await;
    let report = |goal: &str| {
        runs.iter()
            .find(|r| r.correlation_id == goal)
            .and_then(|r| r.result.clone())
            .unwrap()
    };
    let (cost, latency, quality, throughput) = (
        report("cost"),
        report("latency"),
        report("quality"),
        report("throughput"),
    );
    if std::env::var_os("NETRA_SHOW_REPORT").is_some() {
        for r in [&cost, &latency, &quality, &throughput] {
            eprintln!("{}\n", r["executive_summary"]);
            if std::env::var_os("NETRA_SHOW_REPORT").is_some_and(|v| v == "all") {
                eprintln!("{}\n", r["markdown"].as_str().unwrap_or(""));
            }
        }
    }
    let all = [
        kinds(&cost),
        kinds(&latency),
        kinds(&quality),
        kinds(&throughput),
    ];
    for i in 0..all.len() {
        for j in i + 1..all.len() {
            assert_ne!(all[i], all[j], "goals {i} and {j} recommend the same");
        }
    }
    // Cost: savings, and never all traffic to the cheapest model without a floor.
    let [c, l, q, th] = &all;
    assert!(!c.contains(&"model_right_sizing".to_string()), "{c:?}");
    assert!(c.contains(&"model_routing".to_string()), "{c:?}");
    let routing = cost["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "model_routing")
        .unwrap();
    assert_eq!(routing["shadow_evaluation"], true);
    assert!(cost["total_monthly_savings_usd"].as_f64().unwrap() > 0.0);
    // Latency: nothing that only saves money, every option lowers or holds latency.
    assert!(
        l.contains(&"streaming".to_string()) && l.contains(&"capacity_for_peaks".to_string()),
        "{l:?}"
    );
    for r in latency["recommendations"].as_array().unwrap() {
        assert!(r["latency_impact_ms"].as_f64().unwrap() <= 0.0, "{r}");
    }
    // Quality: gpt-4o is top tier, so a same-tier comparison with its cost, no downgrade.
    assert!(
        q.iter()
            .all(|k| k == "model_upgrade" || k == "quality_comparison"),
        "{q:?}"
    );
    assert!(!q.is_empty());
    // Throughput: capacity at the minute peak, self-hosted capacity that fits.
    assert!(
        th.contains(&"capacity_for_peaks".to_string())
            && th.contains(&"self_hosted_capacity".to_string()),
        "{th:?}"
    );
    let md = latency["markdown"].as_str().unwrap();
    assert!(
        md.contains("Left out:")
            && md.contains("model_routing (conv): answers cost; the request asks for latency"),
        "{md}"
    );
    t.finish().await;
}
