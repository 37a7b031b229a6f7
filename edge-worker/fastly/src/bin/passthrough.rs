//! The baseline of `scripts/bench-fastly.sh`: the same Viceroy, the same origin fetch as the service (the `/t/<token>`
//! prefix dropped, `pass`, backend `origin_0`), but no settings beyond the origin, no state, no decision.
#![forbid(unsafe_code)]

use fastly::{Request, Response};
use sharegate_edge::adapter::keys::ORIGIN;
use sharegate_edge::contract::fastly::CONFIG_STORE;

fn main() {
    let req = Request::from_client();
    let origin = fastly::ConfigStore::try_open(CONFIG_STORE)
        .ok()
        .and_then(|c| c.try_get(ORIGIN).ok().flatten())
        .and_then(|o| o.split(',').next().map(|s| s.trim().trim_end_matches('/').to_string()));
    let Some(origin) = origin else {
        Response::from_status(500).send_to_client();
        return;
    };
    let path = req.get_path();
    let path = path
        .strip_prefix("/t/")
        .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or(path);
    let url = format!("{origin}{path}");
    let upstream = Request::new(req.get_method().clone(), url.as_str()).with_pass(true);
    match upstream.send("origin_0") {
        Ok(resp) => resp.send_to_client(),
        Err(_) => Response::from_status(503).send_to_client(),
    }
}
