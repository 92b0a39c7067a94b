//! The reviewer console: one page, its script and its style, built into the binary
//! (`include_str!`), so it works offline and without a CDN.
//!
//! The page loads without a key; the script asks for an admin key, keeps it in
//! `sessionStorage` and sends it as a bearer token to the admin routes. Every answer carries a
//! strict Content-Security-Policy: scripts, styles and requests only from this origin, no
//! inline script or style, no framing, no forms posting elsewhere.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("console/console.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// The policy of every console answer.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                       img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /console`: the reviewer console (no key needed to load it; it asks for one).
#[utoipa::path(get, path = "/console", responses((status = 200, body = String, content_type = "text/html", description = "the console page")))]
pub async fn page() -> Response {
    asset(PAGE, "text/html; charset=utf-8")
}

/// `GET /console/app.js`: the console's script.
pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /console/app.css`: the console's style.
pub async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}
