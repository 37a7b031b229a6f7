//! Country rules on the Fastly app in Viceroy, with the platform's geolocation as the only country source (no
//! forwarded-header trust): the app asks Fastly's geo lookup only when a token has a country rule, and the answer
//! decides it. Viceroy's geolocation data is set here (127.0.0.1, the test client, in DE), so an allow list and a
//! deny list are each tried from inside and outside the country, and a token without a rule is served.
#![allow(clippy::unwrap_used)]

use sharegate_e2e::origin::{StateServer, StaticOrigin};
use sharegate_e2e::unix_now;
use sharegate_e2e::viceroy::Viceroy;
use sharegate_shared::token::{Claims, Countries};

#[path = "../../shared/testkit.rs"]
mod testkit;

const SIGNING: [u8; 32] = [0x81; 32];
const STATE: [u8; 32] = [0x82; 32];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn country_rules_are_decided_by_the_platform_geolocation() {
    let now = unix_now() as u32;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("demo/v0")).unwrap();
    std::fs::write(dir.path().join("demo/v0/seg_000.ts"), b"segment bytes").unwrap();
    let origin = StaticOrigin::start(dir.path().to_path_buf()).await.unwrap();
    let state = StateServer::start(sharegate_e2e::synthetic_state(now, 100, 10, STATE), 1)
        .await
        .unwrap();
    let mut settings = testkit::edge_settings(SIGNING, STATE);
    settings.insert("SHAREGATE_ORIGIN".into(), origin.base.clone());
    settings.insert("SHAREGATE_STATE_URL".into(), state.url.clone());
    settings.insert("SHAREGATE_STATE_MAX_AGE".into(), "86400".into());
    let app = Viceroy::start_with_geo(&settings, &[("127.0.0.1", "DE")])
        .await
        .unwrap();

    let http = reqwest::Client::new();
    // Ids outside the synthetic state's issued range, so no revocation of it applies.
    let mut id = 0xc0u8;
    let mut get = async |countries: Option<Countries<'static>>| {
        id += 1;
        let claims = Claims {
            countries,
            ..testkit::playback_claims([id; 12], "demo", now - 10, now + 600)
        };
        let token = testkit::mint(SIGNING, &claims);
        let r = http
            .get(format!("{}/t/{token}/demo/v0/seg_000.ts", app.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        (status, body)
    };
    let allowed = |(status, body): &(u16, String)| *status == 200 && body == "segment bytes";
    let geo_denied = |(status, body): &(u16, String)| *status == 403 && body.contains("geo_denied");

    let r = get(None).await;
    assert!(allowed(&r), "no rule: {r:?}\n{}", app.log_tail());
    let r = get(Some(Countries::Allow(b"DE"))).await;
    assert!(allowed(&r), "allow DE, client in DE: {r:?}\n{}", app.log_tail());
    let r = get(Some(Countries::Allow(b"FRUS"))).await;
    assert!(geo_denied(&r), "allow FR US, client in DE: {r:?}");
    let r = get(Some(Countries::Deny(b"ATDE"))).await;
    assert!(geo_denied(&r), "deny AT DE, client in DE: {r:?}");
    let r = get(Some(Countries::Deny(b"FR"))).await;
    assert!(allowed(&r), "deny FR, client in DE: {r:?}");
}
