//! The page at `/`: its files are built from `web/` into `web/dist` (see
//! `web/build.mjs`) and embedded in the binary, so serving it needs no
//! other server and building the binary needs no Node.js. Each file is
//! sent gzip-compressed to a client that takes it, with an `ETag`; the
//! page itself is revalidated on every load, its scripts and styles are
//! named by their content's hash and kept for a year.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_NONE_MATCH, VARY,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// One embedded file and what is sent for it.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    raw: &'static [u8],
    /// Kept for a year (its name changes with its content).
    immutable: bool,
}

/// The embedded files.
const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        raw: include_bytes!("../../web/dist/index.html"),
        immutable: false,
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        raw: include_bytes!("../../web/dist/app.js"),
        immutable: true,
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        raw: include_bytes!("../../web/dist/app.css"),
        immutable: true,
    },
];

/// A file compressed once, on first request, and its tag.
struct Prepared {
    gzip: Vec<u8>,
    etag: HeaderValue,
}

fn prepared(index: usize) -> &'static Prepared {
    static PREPARED: OnceLock<Vec<Prepared>> = OnceLock::new();
    &PREPARED.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| {
                use std::io::Write;
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                let _ = encoder.write_all(asset.raw);
                let hash = xxhash_rust::xxh3::xxh3_64(asset.raw);
                Prepared {
                    gzip: encoder.finish().unwrap_or_default(),
                    etag: HeaderValue::from_str(&format!("\"{hash:016x}\""))
                        .unwrap_or(HeaderValue::from_static("\"0\"")),
                }
            })
            .collect()
    })[index]
}

fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such file of the page\n").into_response();
    };
    let asset = &ASSETS[index];
    let prepared = prepared(index);
    let cache = if asset.immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut response = if headers
        .get(IF_NONE_MATCH)
        .is_some_and(|tag| tag.as_bytes() == prepared.etag.as_bytes())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else if accepts_gzip(headers) {
        let mut r = prepared.gzip.clone().into_response();
        r.headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        asset.raw.into_response()
    };
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(ETAG, prepared.etag.clone());
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

/// `GET /`: the page.
pub(super) async fn page(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /ui/{file}`: its scripts and styles.
pub(super) async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    serve(&name, &headers)
}

/// Whether `path` is one of the page's own files: they hold no data, so
/// they are served without a token (the page asks for one).
pub fn is_page(path: &str) -> bool {
    path == "/" || path.starts_with("/ui/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_sent_to_clients_that_take_it() {
        let mut headers = HeaderMap::new();
        assert!(!accepts_gzip(&headers));
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("br, gzip;q=0.8"));
        assert!(accepts_gzip(&headers));
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip;q=0"));
        assert!(!accepts_gzip(&headers));
        let response = serve("index.html", &HeaderMap::new());
        assert_eq!(response.status(), StatusCode::OK);
        let tag = response.headers()[ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(IF_NONE_MATCH, tag);
        assert_eq!(
            serve("index.html", &again).status(),
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(serve("nope.js", &again).status(), StatusCode::NOT_FOUND);
    }
}
