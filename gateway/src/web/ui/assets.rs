//! The dashboard's static files, compiled into the binary with `include_bytes!` (no CDN, no
//! font, nothing read from disk), gzip-compressed once on first use, served with an ETag (its
//! content hash) and `Cache-Control`; pages link them as `/assets/{name}?v={hash}`, so a new
//! build's files are fetched and an unchanged one is revalidated with a 304.
//!
//! Why not rust-embed: five files; `include_bytes!` and the flate2 the uplink already uses do
//! it without another dependency tree.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::Digest as _;

struct Asset {
    name: &'static str,
    mime: &'static str,
    raw: &'static [u8],
}

const FILES: &[Asset] = &[
    Asset {
        name: "app.css",
        mime: "text/css; charset=utf-8",
        raw: include_bytes!("../../../assets/app.css"),
    },
    Asset {
        name: "app.js",
        mime: "text/javascript; charset=utf-8",
        raw: include_bytes!("../../../assets/app.js"),
    },
    Asset {
        name: "uPlot.iife.min.js",
        mime: "text/javascript; charset=utf-8",
        raw: include_bytes!("../../../assets/vendor/uplot-1.6.32/uPlot.iife.min.js"),
    },
    Asset {
        name: "uPlot.min.css",
        mime: "text/css; charset=utf-8",
        raw: include_bytes!("../../../assets/vendor/uplot-1.6.32/uPlot.min.css"),
    },
];

struct Ready {
    gzip: Vec<u8>,
    etag: String,
}

fn ready() -> &'static Vec<Ready> {
    static R: OnceLock<Vec<Ready>> = OnceLock::new();
    R.get_or_init(|| {
        FILES
            .iter()
            .map(|a| {
                use std::io::Write as _;
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                let _ = gz.write_all(a.raw);
                let hash = sha2::Sha256::digest(a.raw);
                Ready {
                    gzip: gz.finish().unwrap_or_default(),
                    etag: format!("\"{}\"", hex8(&hash)),
                }
            })
            .collect()
    })
}

fn hex8(b: &[u8]) -> String {
    b.iter().take(8).map(|x| format!("{x:02x}")).collect()
}

/// `/assets/{name}?v={hash}` for a page's link.
pub fn url(name: &str) -> String {
    match FILES.iter().position(|a| a.name == name) {
        Some(i) => format!("/assets/{name}?v={}", ready()[i].etag.trim_matches('"')),
        None => format!("/assets/{name}"),
    }
}

/// The compressed size of an asset (for the page-weight test).
pub fn gzipped_len(name: &str) -> Option<usize> {
    FILES
        .iter()
        .position(|a| a.name == name)
        .map(|i| ready()[i].gzip.len())
}

pub async fn serve(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(i) = FILES.iter().position(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let (a, r) = (&FILES[i], &ready()[i]);
    let etag = HeaderValue::from_str(&r.etag).unwrap_or(HeaderValue::from_static("\"\""));
    let cache = HeaderValue::from_static("public, max-age=604800");
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == r.etag.as_bytes())
    {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag), (header::CACHE_CONTROL, cache)],
        )
            .into_response();
    }
    let gzip_ok = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("gzip"));
    let mime = HeaderValue::from_static(a.mime);
    if gzip_ok {
        (
            [
                (header::CONTENT_TYPE, mime),
                (header::CONTENT_ENCODING, HeaderValue::from_static("gzip")),
                (header::ETAG, etag),
                (header::CACHE_CONTROL, cache),
                (header::VARY, HeaderValue::from_static("accept-encoding")),
            ],
            r.gzip.clone(),
        )
            .into_response()
    } else {
        (
            [
                (header::CONTENT_TYPE, mime),
                (header::ETAG, etag),
                (header::CACHE_CONTROL, cache),
                (header::VARY, HeaderValue::from_static("accept-encoding")),
            ],
            a.raw,
        )
            .into_response()
    }
}
