//! The API commands as a user runs them against `sharegate dev`: what they print, and their exit status (0 on a
//! success answer, 1 on an error answer with the status on stderr, 2 for a value the command line refuses).
#![allow(clippy::unwrap_used)]

mod common;

use common::{Dev, free_port};
use std::process::Output;

/// `sharegate <args>` against the API at `api`, with `key` as SHAREGATE_API_KEY.
fn run(api: u16, key: &str, args: &[&str]) -> Output {
    common::sharegate()
        .args(args)
        .args(["--api", &format!("http://127.0.0.1:{api}")])
        .env("SHAREGATE_API_KEY", key)
        .output()
        .unwrap()
}

/// The JSON a successful command printed.
fn ok(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}: {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn api_commands_against_dev() {
    let dir = tempfile::tempdir().unwrap();
    let (api, edge) = (free_port(), free_port());
    let dev = Dev::start(dir.path(), api, edge, &[]);
    let (minter, responder, admin) = (dev.key("minter"), dev.key("responder"), dev.key("admin"));

    let link = ok(&run(
        api,
        &minter,
        &["mint", "--asset", "demo", "--ttl", "600", "--viewer", "v1"],
    ));
    let url = link["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("http://127.0.0.1:{edge}/t/")), "{link}");

    // A minter may not revoke: the API's error is printed, its status goes to stderr, the exit status is 1.
    let refused = run(api, &minter, &["revoke", "--kind", "token", "--token", url]);
    assert_eq!(refused.status.code(), Some(1));
    let error: serde_json::Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert!(error["error"].is_string(), "{error}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("403"));

    let args = [
        "revoke",
        "--kind",
        "token",
        "--token",
        url,
        "--reason",
        "leaked",
        "--idempotency-key",
        "cli-1",
    ];
    let receipt = ok(&run(api, &responder, &args));
    assert_eq!(receipt["kind"], "token", "{receipt}");
    // The same idempotency key: the same receipt, not a second revocation.
    assert_eq!(ok(&run(api, &responder, &args))["id"], receipt["id"]);

    let diagnosis = ok(&run(api, &responder, &["diagnose", url]));
    assert_eq!(diagnosis["reason"], "revoked", "{diagnosis}");

    // A value the command line does not know is refused before anything is sent.
    assert_eq!(run(api, &admin, &["apikeys", "--role", "root"]).status.code(), Some(2));
    let auditor = ok(&run(
        api,
        &admin,
        &["apikeys", "--role", "auditor", "--label", "cli test"],
    ));
    let auditor = auditor["key"].as_str().unwrap();
    // A query value with a space and `&` reaches the service intact.
    let audit = ok(&run(
        api,
        auditor,
        &["audit", "--action", "revocations.", "--subject", "a b&c"],
    ));
    assert!(audit.is_object() || audit.is_array(), "{audit}");
    let audit = ok(&run(api, auditor, &["audit", "--action", "revocations."]));
    assert!(audit.to_string().contains("revocations."), "{audit}");

    let share = ok(&run(
        api,
        &minter,
        &["share", "--asset", "demo", "--audience", "signed_in"],
    ));
    assert_eq!(share["audience"], "signed_in", "{share}");
    let keys = ok(&run(api, &responder, &["keys", "list"]));
    assert!(keys.to_string().contains("active"), "{keys}");
}
