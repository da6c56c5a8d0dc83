//! `GET /`: the chat page, and the script, style sheet and icon it loads from `/page/`.
//!
//! The files live in `src/page/` and are compiled into the binary. The page only talks to
//! this server's own `/v1` API (from the browser, with the user's key when the server
//! has one), so serving it needs no key. Every answer carries a Content-Security-Policy
//! that allows nothing but these files and same-origin requests, and requires Trusted
//! Types, so even a stray `innerHTML` with model text could not run as markup.

use axum::http::header::{HeaderName, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS};
use axum::response::{IntoResponse, Response};

/// What the page may load and do.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'";

const INDEX: &str = include_str!("../page/index.html");
const CHAT_JS: &str = include_str!("../page/chat.js");
const MARKDOWN_JS: &str = include_str!("../page/markdown.js");
const STYLE: &str = include_str!("../page/chat.css");
const ICON: &str = include_str!("../page/icon.svg");

pub async fn index() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

pub async fn chat_js() -> Response {
    file("text/javascript; charset=utf-8", CHAT_JS)
}

pub async fn markdown_js() -> Response {
    file("text/javascript; charset=utf-8", MARKDOWN_JS)
}

pub async fn style() -> Response {
    file("text/css; charset=utf-8", STYLE)
}

pub async fn icon() -> Response {
    file("image/svg+xml", ICON)
}

fn file(content_type: &'static str, body: &'static str) -> Response {
    let headers: [(HeaderName, &'static str); 5] = [
        (CONTENT_TYPE, content_type),
        (CONTENT_SECURITY_POLICY, CSP),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (REFERRER_POLICY, "no-referrer"),
        // The files change with the binary: always revalidate.
        (CACHE_CONTROL, "no-cache"),
    ];
    (headers, body).into_response()
}
