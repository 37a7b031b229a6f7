//! `sharegate dev` runs its edge with the same `SHAREGATE_*` edge settings, read by the same parser, as
//! `sharegate edge` (issue 11 item 7): here two-tier tokens and a trusted country header, set in the
//! environment, take effect on the dev edge. Also: a bootstrap admin key from `SHAREGATE_ADMIN_KEY` is not said to sit
//! in a file that was never written, and the help texts name only docs that exist (item 9).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Dev {
    child: Child,
    lines: Vec<String>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &std::path::Path, api: u16, edge: u16, env: &[(&str, &str)]) -> Dev {
    let media = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/demo-media");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sharegate"))
        .args(["dev", "--data-dir", data.to_str().unwrap()])
        .args([
            "--api-addr",
            &format!("127.0.0.1:{api}"),
            "--edge-addr",
            &format!("127.0.0.1:{edge}"),
        ])
        .args(["--origin", media.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for line in out.lines() {
        let line = line.unwrap();
        let done = line.contains("health:");
        lines.push(line);
        if done {
            break;
        }
    }
    Dev { child, lines }
}

fn key(dev: &Dev, role: &str) -> String {
    let l = dev
        .lines
        .iter()
        .find(|l| l.contains(&format!("{role} API key")))
        .unwrap_or_else(|| panic!("no {role} key in {:#?}", dev.lines));
    l.rsplit(' ').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_edge_honours_the_edge_settings() {
    let dir = tempfile::tempdir().unwrap();
    let (api, edge) = (free_port(), free_port());
    let dev = start(
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

    let status: serde_json::Value = http
        .get(format!("http://127.0.0.1:{edge}/_sharegate/status"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert_eq!(status["country_source"], "header:cf-ipcountry", "{status}");

    let minter = key(&dev, "minter");
    let link: serde_json::Value = http
        .post(format!("http://127.0.0.1:{api}/v1/links"))
        .bearer_auth(&minter)
        .header("content-type", "application/json")
        .body(r#"{"asset":"demo","ttl":600}"#)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
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
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for args in [
        &["--help"][..],
        &["edge", "--help"],
        &["dev", "--help"],
        &["serve", "--help"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_sharegate"))
            .args(args)
            .output()
            .unwrap();
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
