//! A real Prometheus (Debian's `prometheus` package) scrapes `sharegate dev` with an auditor key from a credentials
//! file and evaluates `deploy/prometheus/sharegate-rules.yml` (issue 14): the target is up, every rule group is
//! healthy with no evaluation error, and the recording rules produce samples from what the service exported.
//!
//! `scripts/test.sh` installs prometheus; without it the test fails when `CI=true` and is skipped loudly otherwise.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Dev, free_port, repo_root};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn get(http: &reqwest::Client, url: &str) -> serde_json::Value {
    match http.get(url).send().await {
        Ok(r) => r.json().await.unwrap_or(serde_json::Value::Null),
        Err(_) => serde_json::Value::Null,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_dev_and_evaluates_the_slo_rules() {
    if Command::new("prometheus").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").is_err(),
            "prometheus is not installed (scripts/test.sh installs Debian's prometheus)"
        );
        eprintln!("SKIPPED: prometheus is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (api, edge) = (free_port(), free_port());
    let dev = Dev::start(&dir.path().join("data"), api, edge, &[]);
    let auditor = dev.key("auditor");
    let http = reqwest::Client::new();

    // Something to count: a beacon-free open of the demo through the edge (mint, playlist), so the opens series
    // exists with a value.
    let minter = dev.key("minter");
    let link = common::mint_link(&http, api, &minter, r#"{"asset":"demo","ttl":600}"#).await;
    let url = link["url"].as_str().unwrap();
    assert!(http.get(url).send().await.unwrap().status().is_success());

    let key_file = dir.path().join("auditor.key");
    std::fs::write(&key_file, &auditor).unwrap();
    let rules = repo_root().join("deploy/prometheus/sharegate-rules.yml");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  \
             - job_name: sharegate\n    authorization:\n      type: Bearer\n      credentials_file: {key}\n    \
             static_configs:\n      - targets: ['127.0.0.1:{api}']\n",
            rules = rules.display(),
            key = key_file.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let _prom = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    loop {
        assert!(Instant::now() < deadline, "Prometheus never got healthy: {last}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let targets = get(&http, &format!("{base}/targets")).await;
        let active = &targets["data"]["activeTargets"];
        let up = active
            .as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["health"] == "up");
        let rules = get(&http, &format!("{base}/rules")).await;
        let groups = rules["data"]["groups"].as_array().cloned().unwrap_or_default();
        let all_rules: Vec<&serde_json::Value> = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        let evaluated = !all_rules.is_empty()
            && all_rules
                .iter()
                .all(|r| r["health"] == "ok" && r["lastError"].as_str().unwrap_or("").is_empty());
        let opens = get(&http, &format!("{base}/query?query=sharegate:link_opens:rate5m")).await;
        let sampled = opens["data"]["result"].as_array().is_some_and(|r| !r.is_empty());
        last = format!(
            "up={up} rules={} evaluated={evaluated} sampled={sampled} targets={active}",
            all_rules.len()
        );
        if up && evaluated && sampled {
            assert_eq!(groups.len(), 2, "{rules}");
            assert!(all_rules.len() > 30, "{}", all_rules.len());
            break;
        }
    }
    // The QoE and beacon series the rules and the dashboard read are there, with bounded labels.
    for series in [
        "sharegate_beacons_total",
        "sharegate_purge_backlog_oldest_seconds",
        "sharegate_edge_state_age_seconds",
        "sharegate_playlist_opens_total",
    ] {
        let v = get(&http, &format!("{base}/query?query={series}")).await;
        assert!(
            v["data"]["result"].as_array().is_some_and(|r| !r.is_empty()),
            "{series}: {v}"
        );
    }
    drop(dev);
}
