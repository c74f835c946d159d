//! The console: the pages people open in a browser — the wall (大屏), the figures (考核),
//! search and the case, operations. The gateway serves them on its own mutual-TLS listener,
//! so a person reaches them with the certificate they already hold, and the pages see exactly
//! what that identity may read, through the same APIs partners call (the pages have no other
//! way in). Every asset is in the binary — the networks it runs on reach no CDN — and the one
//! library, Apache ECharts, is vendored with its licence and its recorded hash
//! (`console/vendor/README.md`). No build step: plain HTML, CSS and JavaScript.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::refusal::{Reason, Refusal};

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $content_type:literal) => {
        Asset {
            path: $path,
            content_type: $content_type,
            bytes: include_bytes!(concat!("console/", $path)),
        }
    };
}

const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("i18n.js", "text/javascript; charset=utf-8"),
    asset!("xlsx.js", "text/javascript; charset=utf-8"),
    asset!("vendor/echarts.min.js", "text/javascript; charset=utf-8"),
    asset!("vendor/LICENSE-echarts", "text/plain; charset=utf-8"),
    asset!("vendor/NOTICE-echarts", "text/plain; charset=utf-8"),
    asset!("vendor/LICENSE-d3", "text/plain; charset=utf-8"),
];

/// What the pages may do: load only this gateway's own scripts and call only its APIs; no
/// inline script, no framing. (Inline styles are allowed: the charts set them.)
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The entity tag of an asset: its SHA-256, cut short (the binary is the version).
fn etag(asset: &Asset) -> String {
    let digest = crate::model::digest::sha256_hex(asset.bytes);
    format!("\"{}\"", &digest[..24])
}

fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let tag = etag(asset);
    let matches = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.bytes).into_response()
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-cache"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if let Ok(tag) = HeaderValue::from_str(&tag) {
        headers.insert(header::ETAG, tag);
    }
    response
}

/// `GET /console/` — the page; the pages within it are fragments (`#/wall`, `#/figures`, …).
pub async fn index(headers: HeaderMap) -> Response {
    serve(&ASSETS[0], &headers)
}

/// `GET /console/{file}` — a script, the style sheet, a vendored file.
pub async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.path == path) {
        Some(asset) => serve(asset, &headers),
        None => Refusal::new(Reason::NoRoute, format!("no console file {path:?}")).into_response(),
    }
}

/// `GET /` and `GET /console` — to the console.
pub async fn to_console() -> Redirect {
    Redirect::to("/console/")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hashes recorded in `console/vendor/README.md`, by file name.
    fn recorded_hashes() -> Vec<(String, String)> {
        include_str!("console/vendor/README.md")
            .lines()
            .filter(|l| l.starts_with("| `"))
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let file = cells.get(1)?.trim_matches('`').to_string();
                let hash = cells.get(5)?.trim_matches('`').to_string();
                Some((file, hash))
            })
            .collect()
    }

    #[test]
    fn vendored_files_match_their_recorded_hashes() {
        let recorded = recorded_hashes();
        assert!(!recorded.is_empty(), "vendor/README.md records no hash");
        for (file, hash) in recorded {
            let asset = ASSETS
                .iter()
                .find(|a| a.path == format!("vendor/{file}"))
                .unwrap_or_else(|| panic!("{file} is recorded but not served"));
            let actual = crate::model::digest::sha256_hex(asset.bytes);
            assert_eq!(actual, hash, "{file} is not the vendored release");
        }
    }

    #[test]
    fn every_script_the_page_loads_is_served() {
        let page = std::str::from_utf8(ASSETS[0].bytes).unwrap();
        let mut loaded = 0;
        for part in page.split("src=\"").skip(1) {
            let src = part.split('"').next().unwrap();
            let path = src.trim_start_matches("/console/");
            assert!(ASSETS.iter().any(|a| a.path == path), "{src} is not embedded");
            loaded += 1;
        }
        assert!(loaded >= 4, "the page loads {loaded} scripts");
        assert!(!page.contains("http://") && !page.contains("https://"), "an outside address");
    }
}
