//! `sharegate dev` as a user runs it: mint through the API, play through the edge with ffmpeg, revoke, see the next
//! request denied; then restart the process on the same data directory and see the revocation still enforced.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Dev, free_port, mint_link};
use std::process::Command;
use std::time::{Duration, Instant};

fn ffmpeg_reads(url: &str) -> bool {
    Command::new("ffmpeg")
        .args([
            "-v", "error", "-nostdin", "-i", url, "-map", "0", "-c", "copy", "-f", "null", "-",
        ])
        .status()
        .is_ok_and(|s| s.success())
}

async fn status_of(http: &reqwest::Client, url: &str) -> (u16, String) {
    let r = http.get(url).send().await.unwrap();
    let reason = r
        .headers()
        .get("x-sharegate-reason")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (r.status().as_u16(), reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mint_play_revoke_restart() {
    assert!(
        Command::new("ffmpeg").arg("-version").output().is_ok(),
        "ffmpeg missing: run scripts/test.sh"
    );
    let dir = tempfile::tempdir().unwrap();
    let (api, edge) = (free_port(), free_port());
    let http = reqwest::Client::new();
    let dev = Dev::start(dir.path(), api, edge, &[]);
    let (minter, responder) = (dev.key("minter"), dev.key("responder"));
    let link = mint_link(&http, api, &minter, r#"{"asset":"demo","ttl":600}"#).await;
    let url = link["url"].as_str().unwrap().to_string();
    let u = url.clone();
    assert!(
        tokio::task::spawn_blocking(move || ffmpeg_reads(&u)).await.unwrap(),
        "the link does not play"
    );
    let seg = url.replace("master.m3u8", "v0/seg_000.ts");
    assert_eq!(status_of(&http, &seg).await.0, 200);

    let r = http
        .post(format!("http://127.0.0.1:{api}/v1/revocations"))
        .bearer_auth(&responder)
        .header("content-type", "application/json")
        .body(format!(r#"{{"kind":"token","token":"{url}","reason":"leaked"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(status_of(&http, &seg).await, (403, "revoked".to_string()));

    // Restart on the same data directory: the revocation is durable and the edge gets it back from the control
    // plane before it serves (until then it fails closed, never open).
    drop(dev);
    let dev = Dev::start(dir.path(), api, edge, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, reason) = status_of(&http, &seg).await;
        if reason == "revoked" {
            assert_eq!(status, 403);
            break;
        }
        assert!(status != 200, "a revoked link was served after the restart");
        assert!(
            Instant::now() < deadline,
            "the edge did not load the state: {status} {reason}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A new link from the restarted system plays.
    let minter = dev.key("minter");
    let link = mint_link(&http, api, &minter, r#"{"asset":"demo"}"#).await;
    let seg2 = link["url"].as_str().unwrap().replace("master.m3u8", "v0/seg_001.ts");
    assert_eq!(status_of(&http, &seg2).await.0, 200);
}
