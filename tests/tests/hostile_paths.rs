//! No request path, however hostile, makes the native edge answer 5xx while its origin is healthy.
//!
//! A 5xx says "the server failed": it pages operators, trips alerts and makes players retry. Anyone holding a link
//! chooses the path below it, so if some path could turn into a 5xx, anyone could produce 5xx at will (issue 11: a
//! path below a file, `.../master.m3u8/x`, and a 300-byte file name both ended as `503 origin_unavailable` on a
//! directory origin). The property: over generated paths (dot segments raw and encoded, encoded slashes and
//! backslashes, NUL and control escapes, overlong UTF-8, names longer than any filesystem takes, paths below files,
//! bit flips of valid URLs, tokens in the path, the query or nowhere), the edge's status is below 500, against a
//! directory origin and against an HTTP origin, both healthy. Requests go over real sockets with the request line
//! written verbatim.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sharegate_e2e::origin::StaticOrigin;
use sharegate_e2e::{HttpRequest, Minted, Suite, conformance_dir, raw_http, start_native_edge, unix_now};
use sharegate_edge_native::NativeOptions;
use sharegate_edge_native::origin::Origin;

/// Pieces of hostile paths: real names (so many paths reach the origin), and everything a normaliser or a
/// filesystem could read differently.
fn piece() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "demo",
        "live",
        "ch1",
        "v0",
        "v1",
        "keys",
        "wm",
        "a",
        "b",
        "master.m3u8",
        "index.m3u8",
        "seg_000.ts",
        "seg_001.ts",
        "init.mp4",
        "k1.key",
        "..",
        ".",
        "%2e%2e",
        "%2E%2e",
        "%2e",
        ".%2e",
        "..;x",
        "%2f",
        "%2F",
        "%5c",
        "\\",
        "%00",
        "%0a",
        "%0d",
        "%7f",
        "%c2%85",
        "%25",
        "%252e",
        "%c0%ae%c0%ae",
        "%e0%80%ae",
        "%ff",
        "%ed%a0%80",
        "%",
        "%g1",
        "~",
        "%7e",
        "%41",
        ";",
        ";a=b",
        "*",
        "'",
        "\"",
        "<x>",
        "{}",
        "|",
        "^",
        "`",
        "\u{ff0e}\u{ff0e}",
        "\u{2215}",
        "é",
        "",
    ])
    .prop_map(str::to_string);
    prop_oneof![
        6 => fixed,
        // Names at and around filesystem limits (255 bytes per name on most), and far past them.
        1 => prop::sample::select(vec![254usize, 255, 256, 300, 1024, 4096]).prop_map(|n| "n".repeat(n)),
        2 => "[ -~]{0,12}",
    ]
}

/// A request target: a token transport, then hostile segments, maybe a trailing slash and a query.
fn target(good: String, live: String) -> impl Strategy<Value = String> {
    let prefixes = vec![
        format!("/t/{good}/demo/"),
        format!("/t/{good}/demo/v0/"),
        format!("/t/{good}/demo/master.m3u8/"),
        format!("/t/{good}/demo/v0/seg_000.ts/"),
        format!("/t/{good}/"),
        format!("/t/{live}/live/ch1/"),
        "/demo/".to_string(),
        "/t/".to_string(),
        "/".to_string(),
    ];
    (
        prop::sample::select(prefixes),
        prop::collection::vec(piece(), 0..6),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec![
            format!("sg={good}"),
            "_HLS_msn=1&_HLS_part=0".to_string(),
            "sg=".to_string(),
            "%00=%ff&&==".to_string(),
        ])),
    )
        .prop_map(|(prefix, segments, trailing, query)| {
            let mut t = prefix + &segments.join("/");
            if trailing {
                t.push('/');
            }
            if let Some(q) = query {
                t.push('?');
                t.push_str(&q);
            }
            t
        })
}

/// A valid URL with some bits flipped.
fn flipped(good: String) -> impl Strategy<Value = String> {
    let base = format!("/t/{good}/demo/v0/seg_000.ts");
    let len = base.len();
    prop::collection::vec((0..len, 0u8..8), 1..4).prop_map(move |flips| {
        let mut b = base.clone().into_bytes();
        for (i, bit) in flips {
            b[i] ^= 1 << bit;
        }
        String::from_utf8_lossy(&b).into_owned()
    })
}

/// What the request line can carry at all: CR and LF would end it and a space would split it (that is HTTP
/// framing, not a path), so they become `_`.
fn framed(t: &str) -> String {
    t.chars()
        .map(|c| if matches!(c, '\r' | '\n' | ' ') { '_' } else { c })
        .collect()
}

async fn start(origin: Origin, suite: &Suite, state: &[u8]) -> String {
    let settings = suite.settings(&serde_json::Value::Null);
    let edge = start_native_edge(
        &settings,
        NativeOptions {
            origins: vec![origin],
            ..NativeOptions::default()
        },
    )
    .await
    .unwrap();
    edge.edge.offer_state(state).unwrap();
    edge.addr
}

#[test]
fn no_request_path_yields_a_5xx_from_a_healthy_origin() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let suite = Suite::load().unwrap();
    let now = unix_now();
    let minted: Minted = suite.mint(now).unwrap();
    let state = suite.state(now, 1).unwrap();
    let (dir_edge, http_edge, _origin) = rt.block_on(async {
        let origin = StaticOrigin::start(conformance_dir().join("origin")).await.unwrap();
        let dir_edge = start(Origin::Dir(conformance_dir().join("origin")), &suite, &state).await;
        let http_edge = start(Origin::parse(&origin.base), &suite, &state).await;
        (dir_edge, http_edge, origin)
    });
    let good = minted.tokens["good"].clone();
    let live = minted.tokens["prefix_live"].clone();

    // The two paths first, so they are always checked.
    let long = format!("/t/{good}/demo/v0/{}.ts", "n".repeat(300));
    let below = format!("/t/{good}/demo/master.m3u8/x");
    let strategy = prop_oneof![
        4 => target(good.clone(), live),
        1 => flipped(good),
    ];
    let cases = std::env::var("HOSTILE_PATH_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let check = |t: &str| -> Result<(), TestCaseError> {
        let req = HttpRequest {
            method: "GET".into(),
            path: framed(t),
            query: None,
            headers: Vec::new(),
            client_ip: None,
            country: None,
        };
        for (name, addr) in [("directory origin", &dir_edge), ("HTTP origin", &http_edge)] {
            let resp = rt
                .block_on(raw_http(addr, "edge.test", &req, &[]))
                .map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
            prop_assert!(
                resp.status < 500,
                "{name}: GET {} answered {}: {}",
                req.path,
                resp.status,
                String::from_utf8_lossy(&resp.body)
            );
        }
        Ok(())
    };
    check(&long).unwrap();
    check(&below).unwrap();
    runner.run(&strategy, |t| check(&t)).unwrap();
}
