//! The browser harness ([`crate::common::browser`]) against a tiny site the
//! test serves itself: a form whose button's script writes the typed text
//! into `#out`, a link to a second page, and a cookie the server sets on
//! the first page and shows on the second. Also: a test that panics leaves
//! no chromedriver, Chromium or profile behind.

use std::time::Duration;

use axum::{
    http::{header, HeaderMap},
    response::{Html, IntoResponse},
    routing::get,
    Router,
};

use crate::common::{
    browser::{self, Browser},
    DEADLINE,
};

const COOKIE: &str = "netra_smoke=c00k1e";

/// The form page; it sets the cookie.
async fn form_page() -> impl IntoResponse {
    let page = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Form</title></head>
<body style="font-family: sans-serif; margin: 2em">
  <h1 id="title">Browser harness</h1>
  <p>Type a text and press the button; it appears below.</p>
  <form id="f" onsubmit="return false">
    <label for="name">Text</label>
    <input id="name" name="name" type="text" value="placeholder text">
    <button id="go" type="button">Show</button>
  </form>
  <div id="out">(nothing yet)</div>
  <p><a id="next" href="/second">To the second page</a></p>
  <script>
    // Writes a moment later, so the test has to wait for it.
    document.getElementById('go').addEventListener('click', () => {
      const text = document.getElementById('name').value;
      setTimeout(() => { document.getElementById('out').textContent = 'You typed: ' + text; }, 150);
    });
  </script>
</body></html>"#;
    (
        [(
            header::SET_COOKIE,
            format!("{COOKIE}; Path=/; SameSite=Lax"),
        )],
        Html(page),
    )
}

/// The second page: shows the Cookie header the browser sent.
async fn second_page(headers: HeaderMap) -> Html<String> {
    let cookie = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(none)");
    Html(format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Second</title></head>
<body style="font-family: sans-serif; margin: 2em">
  <h1 id="title">Second page</h1>
  <p>The browser sent: <code id="cookie">{}</code></p>
  <ul class="item"><li>one</li><li>two</li><li>three</li></ul>
</body></html>"#,
        escape(cookie)
    ))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Serves the site on a free port; returns its base URL.
async fn serve() -> String {
    let app = Router::new()
        .route("/", get(form_page))
        .route("/second", get(second_page));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.len() > 24, "PNG too short");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    (be(16), be(20))
}

#[tokio::test]
async fn drives_a_form_a_link_and_a_cookie() {
    let base = serve().await;
    let b = Browser::start("browser_smoke")
        .await
        .expect("browser starts");

    b.goto(&format!("{base}/")).await.expect("goto form");
    b.wait_for("#name", DEADLINE).await.expect("form is there");
    assert_eq!(b.count("input").await.unwrap(), 1);
    assert_eq!(b.count("#missing").await.unwrap(), 0);
    assert_eq!(b.text("#out").await.unwrap(), "(nothing yet)");
    let size = b
        .eval("return [window.innerWidth, window.innerHeight];")
        .await
        .unwrap();
    assert_eq!(
        size,
        serde_json::json!([browser::WINDOW.0, browser::WINDOW.1])
    );

    // `fill` replaces what the field held.
    b.fill("#name", "first").await.unwrap();
    b.fill("#name", "Grüße from netra").await.unwrap();
    assert_eq!(
        b.eval("return document.getElementById('name').value;")
            .await
            .unwrap(),
        "Grüße from netra"
    );
    b.click("#go").await.unwrap();
    let out = b
        .wait_for_text("#out", "Grüße from netra", DEADLINE)
        .await
        .expect("the script writes the text");
    assert_eq!(out, "You typed: Grüße from netra");
    let form_shot = b.screenshot("form").await.unwrap();

    // The cookie the server set is in the page's cookies...
    let cookies = b.eval("return document.cookie;").await.unwrap();
    assert_eq!(cookies, COOKIE);

    // ...and the browser sends it to the second page, reached by the link.
    b.click("#next").await.unwrap();
    b.wait_for_text("#title", "Second page", DEADLINE)
        .await
        .expect("second page");
    assert_eq!(b.url().await.unwrap(), format!("{base}/second"));
    assert_eq!(b.text("#cookie").await.unwrap(), COOKIE);
    assert_eq!(b.count("ul.item li").await.unwrap(), 3);
    assert!(b
        .html()
        .await
        .unwrap()
        .contains("<h1 id=\"title\">Second page</h1>"));
    let second_shot = b.screenshot("second page").await.unwrap();

    // Errors say what was looked for and what was seen.
    let e = b.text("#missing").await.unwrap_err().to_string();
    assert!(e.contains("#missing"), "{e}");
    let e = b
        .wait_for_text("#title", "never there", Duration::from_millis(300))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("never there") && e.contains("Second page"),
        "{e}"
    );
    let e = b
        .wait_for("#missing", Duration::from_millis(300))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("#missing"), "{e}");
    assert!(b.click("#missing").await.is_err());

    // The screenshots, numbered in the order taken, are real 1280x900 PNGs.
    let dir = browser::target_dir().join("screenshots/browser_smoke");
    assert_eq!(form_shot, dir.join("01-form.png"));
    assert_eq!(second_shot, dir.join("02-second_page.png"));
    for shot in [&form_shot, &second_shot] {
        let bytes = std::fs::read(shot).expect("screenshot file");
        assert_eq!(png_size(&bytes), browser::WINDOW, "{}", shot.display());
    }

    b.close().await.expect("close");
}

/// Processes whose command line contains `marker` (read from /proc).
fn processes_with(marker: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|c| c.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(marker))
        .collect()
}

/// Temporary directories of browsers of this test name.
fn temp_dirs_with(prefix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return vec![];
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

#[tokio::test]
async fn a_panicking_test_leaves_no_browser_behind() {
    const NAME: &str = "browser_panic_cleanup";
    let marker = format!("netra-browser-{NAME}-");
    let base = serve().await;
    let m = marker.clone();
    let task = tokio::spawn(async move {
        let b = Browser::start(NAME).await.expect("browser starts");
        b.goto(&format!("{base}/")).await.expect("goto");
        // chromedriver's HOME and Chromium's profile are in the marked directory.
        assert!(!processes_with(&m).is_empty(), "no Chromium running");
        assert_eq!(temp_dirs_with(&m).len(), 1);
        panic!("deliberate panic: the test checks the cleanup after it");
    });
    let err = task.await.expect_err("the task panics");
    assert!(err.is_panic());

    // Dropping killed them; zombies (already dead) have no command line.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let left = processes_with(&marker);
        if left.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still running: {left:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(temp_dirs_with(&marker), Vec::<String>::new());
}

#[test]
fn a_missing_chromedriver_is_named() {
    // The check `Browser::start` makes, on values instead of the
    // environment (which the other tests of this binary read).
    for value in [
        None,
        Some("/nonexistent/chromedriver"),
        Some("chromedriver"),
        Some("/tmp"),
    ] {
        let e = browser::check_binary("NETRA_CHROMEDRIVER", value, "chromium-driver")
            .expect_err("not an executable")
            .to_string();
        assert!(
            e.contains("NETRA_CHROMEDRIVER") && e.contains("chromium-driver"),
            "{e}"
        );
    }
    let sh = browser::check_binary("NETRA_CHROMEDRIVER", Some("/bin/sh"), "chromium-driver");
    assert_eq!(
        sh.expect("an executable"),
        std::path::PathBuf::from("/bin/sh")
    );
}
