//! The console's files, compiled into the binary from
//! `services/gateway/console/` (hand-written HTML, CSS and JavaScript: no
//! build step, no framework, nothing fetched at run time), served with a
//! strict Content-Security-Policy: scripts, styles and calls only from this
//! origin, no inline script, no framing.

use axum::{
    extract::Path,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

/// A JavaScript module of the console.
macro_rules! script {
    ($name:literal) => {
        (
            $name,
            "text/javascript; charset=utf-8",
            include_str!(concat!("../../console/", $name)),
        )
    };
}

/// Everything the page may load or call: its own origin only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// `(name, MIME type, contents)` of every file under `console/`.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../console/index.html"),
    ),
    script!("console.js"),
    script!("core.js"),
    script!("overview.js"),
    script!("models.js"),
    script!("playground.js"),
    script!("collections.js"),
    script!("metrics.js"),
    script!("access.js"),
    script!("serving.js"),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../../console/console.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../../console/favicon.svg"),
    ),
];

fn serve(name: &str) -> Response {
    let Some((_, mime, body)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "no such console file").into_response();
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(mime)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            // Small files: revalidated each load, so a new gateway's page
            // is never mixed with an old script.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        *body,
    )
        .into_response()
}

/// `/ui` → `ui/`, relative, so it holds behind any path prefix.
pub async fn redirect() -> Response {
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, HeaderValue::from_static("ui/"))],
    )
        .into_response()
}

pub async fn index() -> Response {
    serve("index.html")
}

pub async fn file(Path(name): Path<String>) -> Response {
    serve(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_carries_the_policy_and_unknown_files_are_404() {
        for (name, _, _) in FILES {
            let r = serve(name);
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(
                r.headers()[header::CONTENT_SECURITY_POLICY],
                HeaderValue::from_static(CSP)
            );
        }
        assert_eq!(serve("../Cargo.toml").status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn every_imported_module_is_served() {
        for (name, _, body) in FILES.iter().filter(|(n, _, _)| n.ends_with(".js")) {
            for import in body.split("from \"./").skip(1) {
                let file = import.split('"').next().unwrap_or_default();
                assert!(
                    FILES.iter().any(|(n, _, _)| *n == file),
                    "{name} imports {file}, which is not served"
                );
            }
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let (_, _, html) = FILES[0];
        assert!(!html.contains("<script>") && !html.contains("style=\""));
        assert!(!html.contains("onclick") && !html.contains("javascript:"));
    }
}
