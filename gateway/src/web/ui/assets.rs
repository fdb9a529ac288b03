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

#[cfg(test)]
mod contrast {
    //! WCAG 2.1 AA in the stylesheet: every rule that sets both a text colour and a background
    //! has a contrast ratio of at least 4.5:1, and every dark text colour set alone is at least
    //! 4.5:1 on each light ground the stylesheet uses (white, the page, tables, cards, tiles).

    const CSS: &str = include_str!("../../../assets/app.css");

    fn rgb(hex: &str) -> Option<[f64; 3]> {
        let h = hex.strip_prefix('#')?;
        let h: String = match h.len() {
            3 => h.chars().flat_map(|c| [c, c]).collect(),
            6 => h.to_owned(),
            _ => return None,
        };
        let p = |i: usize| u8::from_str_radix(&h[i..i + 2], 16).ok().map(f64::from);
        Some([p(0)?, p(2)?, p(4)?])
    }

    /// WCAG relative luminance.
    fn lum(c: [f64; 3]) -> f64 {
        let ch = |v: f64| {
            let s = v / 255.0;
            if s <= 0.039_28 {
                s / 12.92
            } else {
                ((s + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * ch(c[0]) + 0.7152 * ch(c[1]) + 0.0722 * ch(c[2])
    }

    fn ratio(a: [f64; 3], b: [f64; 3]) -> f64 {
        let (x, y) = (lum(a), lum(b));
        (x.max(y) + 0.05) / (x.min(y) + 0.05)
    }

    type Rgb = [f64; 3];

    /// `(selector, color, background)` of each rule (hex values only).
    fn rules() -> Vec<(String, Option<Rgb>, Option<Rgb>)> {
        let mut out = Vec::new();
        // Media queries nest one level; their inner rules are found the same way.
        for block in CSS.split('}') {
            let Some((sel, decls)) = block.rsplit_once('{') else {
                continue;
            };
            let mut color = None;
            let mut bg = None;
            for d in decls.split(';') {
                let Some((k, v)) = d.split_once(':') else {
                    continue;
                };
                let v = v.trim().trim_end_matches("!important");
                match k.trim() {
                    "color" => color = rgb(v),
                    "background" | "background-color" => bg = rgb(v),
                    _ => {}
                }
            }
            out.push((sel.trim().to_owned(), color, bg));
        }
        out
    }

    #[test]
    fn text_and_ground_pairs_meet_wcag_aa() {
        let rules = rules();
        let mut checked = 0;
        let mut grounds = vec![[255.0; 3]];
        for (sel, color, bg) in &rules {
            if let (Some(c), Some(b)) = (color, bg) {
                let r = ratio(*c, *b);
                assert!(r >= 4.5, "{sel}: contrast {r:.2}:1 is under 4.5:1");
                checked += 1;
            }
            if let Some(b) = bg {
                if lum(*b) > 0.6 {
                    grounds.push(*b);
                }
            }
        }
        for (sel, color, bg) in &rules {
            let (Some(c), None) = (color, bg) else {
                continue;
            };
            if lum(*c) > 0.4 {
                continue; // light text: set on the dark header and buttons, checked above
            }
            for g in &grounds {
                let r = ratio(*c, *g);
                assert!(r >= 4.5, "{sel}: contrast {r:.2}:1 on {g:?} is under 4.5:1");
                checked += 1;
            }
        }
        assert!(
            checked > 40,
            "only {checked} pairs found: is the stylesheet parsed?"
        );
    }

    #[test]
    fn the_ratio_is_wcags() {
        assert!((ratio([0.0; 3], [255.0; 3]) - 21.0).abs() < 1e-9);
        assert!((ratio([118.0; 3], [255.0; 3]) - 4.54).abs() < 0.01);
    }
}
