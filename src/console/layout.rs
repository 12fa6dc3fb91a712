//! The console's page shell (navigation, who is signed in, the sign-out
//! form) and its two embedded assets, `console.css` and `console.js`.

use axum::{
    http::header,
    response::{Html, IntoResponse, Response},
};
use maud::{html, Markup, DOCTYPE};

use super::session::Signed;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// The pages in the navigation: path and label.
const NAV: &[(&str, &str)] = &[
    ("/console", "Runs"),
    ("/console/dead-letters", "Dead letters"),
    ("/console/replays", "Replays"),
    ("/console/queues", "Queues"),
    ("/console/usage", "Usage"),
    ("/console/workloads", "Workloads"),
    ("/console/audit", "Audit"),
];

/// A page for a signed-in browser: navigation (with `current` marked), the
/// form token for scripts, and `body`.
pub fn page(signed: &Signed, current: &str, title: &str, body: Markup) -> Response {
    let doc = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="csrf-token" content=(signed.csrf);
                title { (title) " · netra console" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                header.top {
                    span.brand { "netra" }
                    nav {
                        @for (href, label) in NAV {
                            a href=(href) class=[(*label == current).then_some("current")] { (label) }
                        }
                    }
                    span.who {
                        span #who { (signed.who.actor()) }
                        @if signed.is_operator() { " · all tenants" }
                        form.inline method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(signed.csrf);
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    };
    Html(doc.into_string()).into_response()
}

/// A page without navigation (sign-in, errors).
pub fn bare(title: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    title { (title) " · netra console" }
                    link rel="stylesheet" href="/console/assets/console.css";
                }
                body { main.narrow { (body) } }
            }
        }
        .into_string(),
    )
}

/// A form field carrying the session's form token.
pub fn csrf(signed: &Signed) -> Markup {
    html! { input type="hidden" name="csrf" value=(signed.csrf); }
}

/// A timestamp as the console shows it (UTC, to the second).
pub fn when(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// `GET /console/assets/console.js`.
pub async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        JS,
    )
        .into_response()
}

/// `GET /console/assets/console.css`.
pub async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}
