//! `sharegate dev` runs its edge with the same `SHAREGATE_*` edge settings, read by the same parser, as
//! `sharegate edge` (issue 11 item 7): here two-tier tokens and a trusted country header, set in the
//! environment, take effect on the dev edge. Also: a bootstrap admin key from `SHAREGATE_ADMIN_KEY` is not said to sit
//! in a file that was never written, and the help texts name only docs that exist (item 9).
#![allow(clippy::unwrap_used)]

mod common;

use common::{Dev, free_port, get_json, mint_link};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_edge_honours_the_edge_settings() {
    let dir = tempfile::tempdir().unwrap();
    let (api, edge) = (free_port(), free_port());
    let dev = Dev::start(
        dir.path(),
        api,
        edge,
        &[
            ("SHAREGATE_TWO_TIER", "true"),
            ("SHAREGATE_COUNTRY_HEADER", "CF-IPCountry"),
            (
                "SHAREGATE_ADMIN_KEY",
                "sgk_test_bootstrap_admin_key_from_the_environment",
            ),
        ],
    );
    let http = reqwest::Client::new();

    // The admin key came from the environment: no file was written, and none is named.
    let admin_line = dev.lines.iter().find(|l| l.contains("admin API key")).unwrap();
    assert!(!admin_line.contains("admin.key"), "{admin_line}");
    assert!(!dir.path().join("admin.key").exists());

    let status = get_json(&http, &format!("http://127.0.0.1:{edge}/_sharegate/status")).await;
    assert_eq!(status["country_source"], "header:cf-ipcountry", "{status}");

    let minter = dev.key("minter");
    let link = mint_link(&http, api, &minter, r#"{"asset":"demo","ttl":600}"#).await;
    let url = link["url"].as_str().unwrap();
    let token = url.split("/t/").nth(1).unwrap().split('/').next().unwrap();
    let master = http.get(url).send().await.unwrap();
    assert_eq!(master.status(), 200);
    let body = master.text().await.unwrap();
    // Two-tier: the variant URIs carry session tokens the edge minted, not the share token (without two-tier, path
    // links leave the relative URIs as they are).
    let variants: Vec<&str> = body.lines().filter(|l| l.contains("index.m3u8")).collect();
    assert!(!variants.is_empty(), "{body}");
    for v in &variants {
        assert!(
            v.starts_with("/t/") && !v.contains(token),
            "not a session-token URI: {v}\n{body}"
        );
    }
    // The session token plays the media playlist.
    let media = http
        .get(format!("http://127.0.0.1:{edge}{}", variants[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(media.status(), 200);
}

#[test]
fn help_names_only_docs_that_exist() {
    let root = common::repo_root();
    for args in [
        &["--help"][..],
        &["edge", "--help"],
        &["dev", "--help"],
        &["serve", "--help"],
    ] {
        let out = common::sharegate().args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        for word in text.split(|c: char| c.is_whitespace() || "()[],;:\"'`".contains(c)) {
            if word.starts_with("docs/") {
                let path = word.trim_end_matches('.');
                assert!(
                    root.join(path).is_file(),
                    "`sharegate {args:?}` names {path}, which does not exist"
                );
            }
        }
    }
}
