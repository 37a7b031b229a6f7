//! End to end: real HLS content made by ffmpeg, served through the native edge, read by ffmpeg/ffprobe as the client.
//! A valid link plays through (path, query and two-tier modes); expired, tampered, out-of-scope and revoked links
//! do not, and a revocation pushed to the running edge takes effect on the next request.
#![allow(clippy::unwrap_used)]

use sharegate_e2e::{ffmpeg_reads, ffprobe_duration, make_hls_vod, start_native_edge, unix_now};
use sharegate_edge_native::NativeOptions;
use sharegate_edge_native::origin::Origin;
use sharegate_shared::keys::{KeyRing, SecretKey};
use sharegate_shared::revocation::{
    DeltaParams, IssuedToken, RevokedToken, SnapshotParams, StateKey, build_delta, build_snapshot,
};
use sharegate_shared::token::{Claims, Minter, Permissions, Policy};
use std::collections::BTreeMap;

const SIGNING: [u8; 32] = [0x5a; 32];
const STATE: [u8; 32] = [0x3c; 32];
const EDGE_TOKEN: &str = "e2e-edge-token";

fn settings(two_tier: bool) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(
        "SHAREGATE_SIGNING_KEYS".into(),
        format!("1:active:{}", hex::encode(SIGNING)),
    );
    m.insert("SHAREGATE_STATE_KEY".into(), hex::encode(STATE));
    if two_tier {
        m.insert("SHAREGATE_TWO_TIER".into(), "true".into());
    }
    m
}

fn mint(id: u8, asset: &str, iat: u32, ttl: u32, permissions: Permissions) -> ([u8; 12], String) {
    let ring = KeyRing::with_active(1, SecretKey::new(SIGNING), 86_400);
    let minter = Minter::new(&ring, Policy::default()).unwrap();
    let token_id = [id; 12];
    let c = Claims {
        token_id,
        iat,
        nbf: iat,
        exp: iat + ttl,
        permissions,
        asset: Some(asset.into()),
        share: Some("sh-e2e".into()),
        ..Claims::default()
    };
    (token_id, minter.mint(&c).unwrap())
}

async fn reads(url: String) -> (bool, String) {
    tokio::task::spawn_blocking(move || ffmpeg_reads(&url)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ffmpeg_plays_through_the_native_edge_and_refusals_hold() {
    let tmp = std::env::temp_dir().join(format!("sharegate-e2e-ffmpeg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    make_hls_vod(&tmp, "vod").unwrap();
    let now = unix_now();
    let now32 = u32::try_from(now).unwrap();

    let (good_id, good) = mint(1, "vod", now32, 3600, Permissions::PLAYBACK);
    let (_, expired) = mint(2, "vod", now32 - 7200, 3600, Permissions::PLAYBACK);
    let (_, other) = mint(3, "other", now32, 3600, Permissions::PLAYBACK);
    let (_, query_tok) = mint(4, "vod", now32, 3600, Permissions::PLAYBACK);
    let (_, share_only) = mint(5, "vod", now32, 3600, Permissions::MULTIVARIANT);
    let mut tampered = good.clone().into_bytes();
    tampered[40] = if tampered[40] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();

    // The control plane's snapshot: every issued token known, nothing revoked yet.
    let key = StateKey::new(STATE);
    let issued: Vec<IssuedToken> = (1..=5u8)
        .map(|i| IssuedToken {
            id: [i; 12],
            iat: now32,
            exp: now32 + 3600,
        })
        .collect();
    let params = SnapshotParams {
        generation: 1,
        built_at: now32,
        cutoff: now32 + 1,
        expire_before: now32 - 120,
        max_token_lifetime: 86_400,
    };
    let snapshot = build_snapshot(&params, issued, &[], &[], &key).unwrap();

    let opts = || NativeOptions {
        origins: vec![Origin::Dir(tmp.clone())],
        edge_token: Some(EDGE_TOKEN.into()),
        ..NativeOptions::default()
    };
    let edge = start_native_edge(&settings(false), opts()).await.unwrap();
    let client = reqwest::Client::new();
    let push = |bytes: Vec<u8>| {
        client
            .post(format!("http://{}/_sharegate/state", edge.addr))
            .bearer_auth(EDGE_TOKEN)
            .body(bytes)
            .send()
    };
    assert_eq!(push(snapshot).await.unwrap().status(), 200);
    let base = format!("http://{}", edge.addr);

    // A valid link plays the whole stream, and ffprobe sees its 6 seconds.
    let url = format!("{base}/t/{good}/vod/master.m3u8");
    let (ok, err) = reads(url.clone()).await;
    assert!(ok, "valid link failed: {err}");
    let d = tokio::task::spawn_blocking(move || ffprobe_duration(&url))
        .await
        .unwrap()
        .unwrap();
    assert!((5.5..=6.5).contains(&d), "duration {d}");

    // Refusals: the player cannot read the stream.
    for (what, tok) in [("expired", &expired), ("tampered", &tampered), ("out of scope", &other)] {
        let (ok, _) = reads(format!("{base}/t/{tok}/vod/master.m3u8")).await;
        assert!(!ok, "{what} link played");
    }
    let r = client
        .get(format!("{base}/t/{expired}/vod/master.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
    assert_eq!(r.headers()["x-sharegate-reason"], "expired");

    // A pushed wrong-credential state is refused and changes nothing.
    let r = client
        .post(format!("{base}/_sharegate/state"))
        .bearer_auth("wrong")
        .body(vec![1, 2, 3])
        .send()
        .await;
    assert_eq!(r.unwrap().status(), 401);

    // Revoke the playing link: a delta pushed to the edge; the next request is denied and playback fails.
    let delta = build_delta(
        &DeltaParams {
            base_generation: 1,
            generation: 2,
            built_at: now32,
        },
        &[RevokedToken {
            id: good_id,
            iat: now32,
            exp: now32 + 3600,
        }],
        &[],
        &key,
    )
    .unwrap();
    assert_eq!(push(delta).await.unwrap().status(), 200);
    let r = client
        .get(format!("{base}/t/{good}/vod/v0/seg_000.ts"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-sharegate-reason"], "revoked");
    let (ok, _) = reads(format!("{base}/t/{good}/vod/master.m3u8")).await;
    assert!(!ok, "revoked link played");

    // Query-token mode: the edge rewrites playlists so every URI carries the token.
    let (ok, err) = reads(format!("{base}/vod/master.m3u8?sg={query_tok}")).await;
    assert!(ok, "query-token link failed: {err}");

    // Two-tier: a token that may only open the multivariant playlist plays through, because the edge writes
    // session tokens into the playlists; the same token cannot fetch a segment directly.
    let tt = start_native_edge(&settings(true), opts()).await.unwrap();
    let snapshot2 = build_snapshot(
        &params,
        (1..=5u8).map(|i| IssuedToken {
            id: [i; 12],
            iat: now32,
            exp: now32 + 3600,
        }),
        &[],
        &[],
        &key,
    )
    .unwrap();
    tt.edge.offer_state(&snapshot2).unwrap();
    let tbase = format!("http://{}", tt.addr);
    let (ok, err) = reads(format!("{tbase}/t/{share_only}/vod/master.m3u8")).await;
    assert!(ok, "two-tier link failed: {err}");
    let r = client
        .get(format!("{tbase}/t/{share_only}/vod/v0/seg_000.ts"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-sharegate-reason"], "permission_denied");

    // Events were recorded for the denials and the playlist opens.
    let events = edge.edge.take_events_json().unwrap();
    assert!(
        events.contains("\"kind\":\"expiry\"") && events.contains("\"reason\":\"revoked\""),
        "{events}"
    );
    assert!(events.contains("\"kind\":\"playlist_open\""), "{events}");
    let _ = std::fs::remove_dir_all(&tmp);
}
