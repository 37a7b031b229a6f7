//! Which client facts the native edge trusts, over real sockets (issue 11 item 8).
//!
//! - With no country source (the default), a token with country rules is refused with `503 geo_unavailable`, from
//!   every client and whatever country header the client sends; the status endpoint says so. Tokens without
//!   country rules are unaffected. `SHAREGATE_GEO_LENIENT=true` applies the rule of `docs/token-format.md` §8.
//! - The client address is the socket peer unless a proxy's header is named; named headers are believed only from
//!   `SHAREGATE_TRUSTED_PROXIES` when set, and of `X-Forwarded-For` only the entry the proxy appended counts. No other
//!   client-sent header (`X-Real-IP`, `CF-Connecting-IP`, `X-Sharegate-Country`, ...) moves a decision.
#![allow(clippy::unwrap_used)]

use sharegate_e2e::{HttpRequest, Minted, Suite, conformance_dir, raw_http, start_native_edge, unix_now};
use sharegate_edge_native::NativeOptions;
use sharegate_edge_native::client::ClientSources;
use sharegate_edge_native::origin::Origin;

struct Edge {
    addr: String,
}

async fn edge(suite: &Suite, state: &[u8], settings: &[(&str, &str)]) -> Edge {
    let mut s = suite.settings(&serde_json::Value::Null);
    for (k, v) in settings {
        s.insert((*k).to_string(), (*v).to_string());
    }
    let running = start_native_edge(
        &s,
        NativeOptions {
            origins: vec![Origin::Dir(conformance_dir().join("origin"))],
            client_sources: ClientSources::from_source(&s).unwrap(),
            ..NativeOptions::default()
        },
    )
    .await
    .unwrap();
    running.edge.offer_state(state).unwrap();
    Edge { addr: running.addr }
}

impl Edge {
    /// Status and reason code of a segment request with `token` and these headers.
    async fn get(&self, minted: &Minted, token: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let req = HttpRequest {
            method: "GET".into(),
            path: format!("/t/{}/demo/v0/seg_000.ts", minted.tokens[token]),
            query: None,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
            client_ip: None,
            country: None,
        };
        let r = raw_http(&self.addr, "edge.test", &req, &[]).await.unwrap();
        (
            r.status,
            r.headers.get("x-sharegate-reason").cloned().unwrap_or_default(),
        )
    }

    async fn status(&self) -> serde_json::Value {
        let r = reqwest::get(format!("http://{}/_sharegate/status", self.addr))
            .await
            .unwrap();
        serde_json::from_str(&r.text().await.unwrap()).unwrap()
    }
}

/// Every header a client could send to pose as another address or country.
const SPOOF: &[(&str, &str)] = &[
    ("x-forwarded-for", "203.0.113.77"),
    ("x-real-ip", "203.0.113.77"),
    ("cf-connecting-ip", "203.0.113.77"),
    ("true-client-ip", "203.0.113.77"),
    ("fastly-client-ip", "203.0.113.77"),
    ("forwarded", "for=203.0.113.77"),
    ("x-sharegate-country", "DE"),
    ("cf-ipcountry", "DE"),
    ("x-country-code", "DE"),
];

fn answer(status: u16, reason: &str) -> (u16, String) {
    (status, reason.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_country_source_refuses_country_rules_and_says_so() {
    let suite = Suite::load().unwrap();
    let now = unix_now();
    let minted = suite.mint(now).unwrap();
    let state = suite.state(now, 1).unwrap();

    let strict = edge(&suite, &state, &[]).await;
    for headers in [
        &[][..],
        SPOOF,
        &[("x-sharegate-country", "US")],
        &[("cf-ipcountry", "AT")],
    ] {
        // The deny list would have served everyone, the allow list refused everyone: neither decides.
        assert_eq!(
            strict.get(&minted, "geo_deny_us", headers).await,
            answer(503, "geo_unavailable")
        );
        assert_eq!(
            strict.get(&minted, "geo_allow_de", headers).await,
            answer(503, "geo_unavailable")
        );
        // Headers do not move the address either.
        assert_eq!(
            strict.get(&minted, "ip_bound", headers).await,
            answer(403, "ip_mismatch")
        );
        assert_eq!(strict.get(&minted, "good", headers).await, answer(200, ""));
    }
    let s = strict.status().await;
    assert_eq!(
        (&s["client_ip_source"], &s["country_source"], &s["country_rules"]),
        (&"peer".into(), &"none".into(), &"refused".into()),
        "{s}"
    );

    let lenient = edge(&suite, &state, &[("SHAREGATE_GEO_LENIENT", "true")]).await;
    assert_eq!(lenient.get(&minted, "geo_deny_us", SPOOF).await, answer(200, ""));
    assert_eq!(
        lenient.get(&minted, "geo_allow_de", SPOOF).await,
        answer(403, "geo_denied")
    );
    assert_eq!(lenient.status().await["country_rules"], "lenient");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_header_decides_and_nothing_else_does() {
    let suite = Suite::load().unwrap();
    let now = unix_now();
    let minted = suite.mint(now).unwrap();
    let state = suite.state(now, 1).unwrap();
    let proxied: &[(&str, &str)] = &[
        ("SHAREGATE_CLIENT_IP_HEADER", "X-Forwarded-For"),
        ("SHAREGATE_COUNTRY_HEADER", "CF-IPCountry"),
        ("SHAREGATE_TRUSTED_PROXIES", "127.0.0.1/32, ::1"),
    ];
    // The proxy (loopback here) is in front: its headers decide.
    let e = edge(&suite, &state, proxied).await;
    let s = e.status().await;
    assert_eq!(
        (&s["client_ip_source"], &s["country_source"], &s["country_rules"]),
        (
            &"header:x-forwarded-for".into(),
            &"header:cf-ipcountry".into(),
            &"enforced".into()
        ),
        "{s}"
    );
    assert_eq!(
        e.get(&minted, "geo_allow_de", &[("cf-ipcountry", "AT")]).await,
        answer(200, "")
    );
    assert_eq!(
        e.get(&minted, "geo_allow_de", &[("cf-ipcountry", "US")]).await,
        answer(403, "geo_denied")
    );
    assert_eq!(
        e.get(&minted, "geo_deny_us", &[("cf-ipcountry", "us")]).await,
        answer(403, "geo_denied")
    );
    assert_eq!(
        e.get(&minted, "geo_deny_us", &[("cf-ipcountry", "DE")]).await,
        answer(200, "")
    );
    // Another country header is the client's word, not the proxy's; without the configured one the request did not
    // come through the proxy as configured: no country source for it, so country rules are refused (a deny list
    // must not pass for want of a country).
    assert_eq!(
        e.get(&minted, "geo_allow_de", &[("x-sharegate-country", "DE")]).await,
        answer(503, "geo_unavailable")
    );
    assert_eq!(e.get(&minted, "geo_deny_us", &[]).await, answer(503, "geo_unavailable"));
    // The entry the proxy appended counts, not the one the client wrote first.
    let xff = |v: &'static str| [("x-forwarded-for", v)];
    assert_eq!(
        e.get(&minted, "ip_bound", &xff("198.51.100.1, 203.0.113.7")).await,
        answer(200, "")
    );
    assert_eq!(
        e.get(&minted, "ip_bound", &xff("203.0.113.7, 198.51.100.1")).await,
        answer(403, "ip_mismatch")
    );
    assert_eq!(
        e.get(
            &minted,
            "ip_bound",
            &[("x-real-ip", "203.0.113.7"), ("cf-connecting-ip", "203.0.113.7")]
        )
        .await,
        answer(403, "ip_mismatch")
    );

    // The same headers from a peer that is not the proxy move nothing.
    let elsewhere: Vec<(&str, &str)> = proxied
        .iter()
        .map(|&(k, v)| {
            if k == "SHAREGATE_TRUSTED_PROXIES" {
                (k, "10.0.0.0/8")
            } else {
                (k, v)
            }
        })
        .collect();
    let direct = edge(&suite, &state, &elsewhere).await;
    assert_eq!(direct.get(&minted, "ip_bound", SPOOF).await, answer(403, "ip_mismatch"));
    assert_eq!(
        direct.get(&minted, "ip_bound", &xff("203.0.113.7")).await,
        answer(403, "ip_mismatch")
    );
    // A client that reaches the edge without passing the proxy has no country source at all: a deny list must not
    // pass just because its country is unknown (it would be "unknown country" under §8).
    assert_eq!(
        direct.get(&minted, "geo_allow_de", &[("cf-ipcountry", "DE")]).await,
        answer(503, "geo_unavailable")
    );
    assert_eq!(
        direct.get(&minted, "geo_deny_us", &[("cf-ipcountry", "DE")]).await,
        answer(503, "geo_unavailable")
    );
    assert_eq!(
        direct.get(&minted, "geo_deny_us", &[]).await,
        answer(503, "geo_unavailable")
    );
}
