//! The operator story in a real browser (headless Chromium from Debian's
//! packages, over chromedriver; see `common/browser.rs`): sign in, find the
//! dead-lettered runs, preview the group's replay, patch one run's inputs,
//! replay the group at a rate and watch it reach the end with the runs
//! completed; then another tenant sees none of it, and an operator changes
//! a tenant's weight on the queues page. Screenshots of every page go to
//! `target/screenshots/<test>/`.

use std::time::Duration;

use crate::{
    common::browser::Browser,
    console::{dead_letter_of, failing_optimization, submit},
};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn the_operator_story_in_a_browser() {
    let (t, acme, other) = failing_optimization(3).await;
    let base = t.base();
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(submit(&base, &acme, "w").await);
    }
    for r in &runs {
        t.wait_run(*r, &["dead_lettered"]).await;
    }
    let theirs = submit(&base, &other, "w").await;
    t.wait_run(theirs, &["completed", "needs_input"]).await;
    let d0 = dead_letter_of(&t, runs[0]).await;

    let b = Browser::start("operator_story").await.unwrap();
    // Sign in.
    b.goto(&format!("{base}/console/login")).await.unwrap();
    b.screenshot("login").await.unwrap();
    b.fill("#token", &acme).await.unwrap();
    b.click("#sign-in").await.unwrap();
    b.wait_for("#runs", WAIT).await.unwrap();
    assert_eq!(b.text("#who").await.unwrap(), "tenant:acme");
    b.wait_for_text("#counts", "dead_lettered", WAIT)
        .await
        .unwrap();
    b.screenshot("runs").await.unwrap();

    // Find the dead-lettered runs.
    b.goto(&format!("{base}/console?status=dead_lettered"))
        .await
        .unwrap();
    b.wait_for("#runs", WAIT).await.unwrap();
    assert_eq!(b.count("#runs tr[data-run]").await.unwrap(), 3);
    b.screenshot("runs-dead-lettered").await.unwrap();

    // The group, and the preview of its replay (nothing changes).
    b.click("nav a[href='/console/dead-letters']")
        .await
        .unwrap();
    b.wait_for("a.group", WAIT).await.unwrap();
    b.screenshot("dead-letter-groups").await.unwrap();
    b.click("a.group").await.unwrap();
    b.wait_for("#members", WAIT).await.unwrap();
    assert_eq!(b.count("#members tr[data-dead-letter]").await.unwrap(), 3);
    b.screenshot("group").await.unwrap();
    let group_url = b.url().await.unwrap();
    b.click("#preview").await.unwrap();
    b.wait_for_text("#preview-summary", "resume 3 runs", WAIT)
        .await
        .unwrap();
    assert_eq!(b.count("#preview-runs tbody tr").await.unwrap(), 3);
    b.screenshot("preview").await.unwrap();
    assert_eq!(
        dead_letter_of(&t, runs[0]).await.status,
        "pending",
        "a preview changes nothing"
    );

    // Patch one run's inputs: a bad patch is refused, a good one shows the
    // patched inputs before the replay button is enabled.
    b.goto(&format!("{base}/console/dead-letters/{}", d0.id))
        .await
        .unwrap();
    b.wait_for("#patch", WAIT).await.unwrap();
    b.fill("#patch", r#"{"nope": 1}"#).await.unwrap();
    b.click("#check-patch").await.unwrap();
    b.wait_for_text("#patch-message", "not a phase", WAIT)
        .await
        .unwrap();
    b.screenshot("patch-refused").await.unwrap();
    b.fill("#patch", r#"{"data": {"operator_note": "pricing fixed"}}"#)
        .await
        .unwrap();
    b.click("#check-patch").await.unwrap();
    b.wait_for_text("#patch-message", "Valid patch", WAIT)
        .await
        .unwrap();
    assert!(b
        .text("#patched")
        .await
        .unwrap()
        .contains("\"operator_note\": \"pricing fixed\""));
    b.fill(
        "#patch-reason",
        "pricing fixed upstream; noted in the inputs",
    )
    .await
    .unwrap();
    b.screenshot("patch").await.unwrap();
    b.click("#replay-patched").await.unwrap();
    b.wait_for_text("#job-state", "done", WAIT).await.unwrap();
    t.wait_run(runs[0], &["completed", "needs_input"]).await;
    b.screenshot("patched-replay-done").await.unwrap();

    // Replay the rest of the group at a rate, and watch it to the end.
    b.goto(&group_url).await.unwrap();
    b.wait_for("#members", WAIT).await.unwrap();
    assert_eq!(b.count("#members tr[data-dead-letter]").await.unwrap(), 2);
    b.fill("#rate", "2").await.unwrap();
    b.fill("#replay-reason", "pricing is back; replaying the rest")
        .await
        .unwrap();
    b.click("#replay-group-button").await.unwrap();
    b.wait_for("#job", WAIT).await.unwrap();
    b.screenshot("group-replay-running").await.unwrap();
    b.wait_for_text("#job-state", "done", WAIT).await.unwrap();
    b.wait_for_text("#job-done", "2 / 2", WAIT).await.unwrap();
    for r in &runs {
        t.wait_run(*r, &["completed", "needs_input"]).await;
    }
    b.goto(&b.url().await.unwrap()).await.unwrap();
    b.wait_for("#job-runs", WAIT).await.unwrap();
    let statuses = b.text("#job-runs").await.unwrap();
    assert!(
        !statuses.contains("dead_lettered") && !statuses.contains("queued"),
        "{statuses}"
    );
    b.screenshot("group-replay-done").await.unwrap();

    // The run's page shows the replay linked to its dead letter and the
    // audit entry; the audit page has every action with who and why.
    b.goto(&format!("{base}/console/runs/{}", runs[0]))
        .await
        .unwrap();
    b.wait_for("#timeline", WAIT).await.unwrap();
    let page = b.html().await.unwrap();
    assert!(page.contains("replay of") && page.contains("pricing fixed upstream"));
    b.screenshot("run").await.unwrap();
    // Its report, with the charts, as the run page embeds it.
    b.goto(&format!("{base}/console/runs/{}/report", runs[0]))
        .await
        .unwrap();
    b.wait_for("svg", WAIT).await.unwrap();
    assert!(
        b.count("svg").await.unwrap() >= 3,
        "requests per minute, cost by model, savings"
    );
    b.screenshot("report").await.unwrap();
    b.goto(&format!("{base}/console/audit")).await.unwrap();
    b.wait_for("table.audit", WAIT).await.unwrap();
    let audit = b.text("table.audit").await.unwrap();
    assert!(audit.contains("pricing is back; replaying the rest") && audit.contains("tenant:acme"));
    b.screenshot("audit").await.unwrap();
    for page in ["replays", "usage", "workloads"] {
        b.goto(&format!("{base}/console/{page}")).await.unwrap();
        b.screenshot(page).await.unwrap();
        b.wait_for("h1", WAIT).await.unwrap();
    }
    // The queues are every tenant's: not a tenant's page.
    b.goto(&format!("{base}/console/queues")).await.unwrap();
    b.wait_for_text("h1", "Not found", WAIT).await.unwrap();

    // Another tenant sees none of it.
    b.goto(&format!("{base}/console")).await.unwrap();
    b.click("button.link").await.unwrap();
    b.wait_for("#token", WAIT).await.unwrap();
    b.fill("#token", &other).await.unwrap();
    b.click("#sign-in").await.unwrap();
    b.wait_for("#runs", WAIT).await.unwrap();
    let listed = b.text("#runs").await.unwrap();
    for r in &runs {
        assert!(
            !listed.contains(&r.to_string()[..8]),
            "another tenant's run listed"
        );
    }
    b.goto(&format!("{base}/console/dead-letters"))
        .await
        .unwrap();
    b.wait_for("#groups", WAIT).await.unwrap();
    assert_eq!(b.count("a.group").await.unwrap(), 0);
    b.goto(&format!("{base}/console/runs/{}", runs[0]))
        .await
        .unwrap();
    b.wait_for_text("h1", "Not found", WAIT).await.unwrap();
    b.screenshot("other-tenant-404").await.unwrap();

    // An operator sees every tenant, and the queues.
    let ops = t.operator("ops").await;
    b.goto(&format!("{base}/console")).await.unwrap();
    b.click("button.link").await.unwrap();
    b.wait_for("#token", WAIT).await.unwrap();
    b.fill("#token", &ops).await.unwrap();
    b.click("#sign-in").await.unwrap();
    b.wait_for("#runs", WAIT).await.unwrap();
    let listed = b.text("#runs").await.unwrap();
    assert!(
        listed.contains("acme") && listed.contains("other"),
        "{listed}"
    );
    b.screenshot("operator-runs").await.unwrap();
    b.goto(&format!("{base}/console/queues")).await.unwrap();
    b.wait_for_text("h1", "Queues", WAIT).await.unwrap();
    b.screenshot("operator-queues").await.unwrap();
    // It gives acme a weight of its own, by the row's form.
    let acme_form = "form[data-fair='acme']";
    b.fill(&format!("{acme_form} input[name='weight']"), "3")
        .await
        .unwrap();
    b.fill(
        &format!("{acme_form} input[name='reason']"),
        "acme's share grows",
    )
    .await
    .unwrap();
    b.click(&format!("{acme_form} button")).await.unwrap();
    b.wait_for_text("td[data-weight='acme']", "3", WAIT)
        .await
        .unwrap();
    assert!(!b
        .text("td[data-weight='acme']")
        .await
        .unwrap()
        .contains("default"));
    let weight: Option<i32> = sqlx::query_scalar("SELECT weight FROM tenants WHERE name = 'acme'")
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(weight, Some(3));
    b.screenshot("operator-queues-weight-set").await.unwrap();
    b.goto(&format!("{base}/console/usage")).await.unwrap();
    b.wait_for("h1", WAIT).await.unwrap();
    b.screenshot("operator-usage").await.unwrap();
    b.close().await.unwrap();
    t.finish().await;
}
