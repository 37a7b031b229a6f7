//! Edge events (denials, expiries, playlist opens, stale state) and their batching for the control plane.
//!
//! The engine returns at most one event per decision; adapters push it into an [`EventBatch`] and send a batch
//! (`POST /v1/edge/events`, JSON) when it is full or old enough, off the viewer's request path. Events carry ids for
//! attribution, never a token or a client address.
//!
//! **Attribution comes from a verified token only.** `asset`, `share`, `channel` and `campaign` are the claims of a
//! token whose signature verified (the asset, else the path prefix it is scoped to). A refusal without such a token
//! (no token, a malformed or forged one, a bad path) carries none of them: its path and any claims in it are whatever
//! an anonymous caller chose, and the control plane turns every label into a series (it also folds unknown values
//! into `_unknown` and caps the number of series; see `control-plane/src/service/audit_events.rs`). The batch itself
//! is bounded by [`EventBatch::CAPACITY`].

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Write;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A request was refused (any reason but expiry).
    Deny,
    /// A request came with an expired token.
    Expiry,
    /// A share token opened a multivariant playlist: the start of a playback session.
    PlaylistOpen,
    /// The edge decided on revocation state older than its hard limit (fail-open policy) or refused because of it.
    StateStale,
    /// A media segment served to a request whose CMCD says startup (`su`) or a stall (`bs`): a session's first
    /// segments and its rebuffers, as the player reports them to every edge. Requests without CMCD make no event.
    Segment,
}

impl EventKind {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Deny => "deny",
            EventKind::Expiry => "expiry",
            EventKind::PlaylistOpen => "playlist_open",
            EventKind::StateStale => "state_stale",
            EventKind::Segment => "segment",
        }
    }
}

/// One edge event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// Reason code for denials.
    pub reason: Option<&'static str>,
    /// Unix seconds.
    pub at: u64,
    /// Attribution, from the token's claims when it could be read.
    pub asset: Option<String>,
    /// Share id.
    pub share: Option<String>,
    /// Channel.
    pub channel: Option<String>,
    /// Campaign.
    pub campaign: Option<String>,
    /// The edge that saw it.
    pub edge: String,
    /// The verified token's session key, `<iat>-<token id hex>`: how the control plane groups the events of a
    /// client without our player page into one session.
    pub token: Option<String>,
    /// The viewer's plan from the token's tier claim (`free`, `trial`, `paid`, `other`; docs/entitlement.md), so
    /// analytics can split by it.
    pub plan: Option<&'static str>,
    /// The request's CMCD, when it carried any (boxed: most events have none).
    pub cmcd: Option<alloc::boxed::Box<crate::cmcd::Cmcd>>,
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl Event {
    /// Append this event as a JSON object.
    pub fn write_json(&self, out: &mut String) {
        out.push_str("{\"kind\":");
        json_str(out, self.kind.as_str());
        out.push_str(",\"at\":");
        out.push_str(&self.at.to_string());
        let fields = [
            ("reason", self.reason),
            ("asset", self.asset.as_deref()),
            ("share", self.share.as_deref()),
            ("channel", self.channel.as_deref()),
            ("campaign", self.campaign.as_deref()),
            ("edge", Some(self.edge.as_str())),
            ("token", self.token.as_deref()),
            ("plan", self.plan),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                out.push_str(",\"");
                out.push_str(k);
                out.push_str("\":");
                json_str(out, v);
            }
        }
        if let Some(c) = &self.cmcd {
            for (k, v) in [("sid", c.sid.as_deref()), ("cid", c.cid.as_deref()), ("ot", c.ot)] {
                if let Some(v) = v {
                    let _ = write!(out, ",\"{k}\":");
                    json_str(out, v);
                }
            }
            for (k, v) in [("bs", c.bs), ("su", c.su)] {
                if v {
                    let _ = write!(out, ",\"{k}\":true");
                }
            }
            for (k, v) in [("bl", c.bl), ("br", c.br), ("mtp", c.mtp)] {
                if let Some(v) = v {
                    let _ = write!(out, ",\"{k}\":{v}");
                }
            }
        }
        out.push('}');
    }
}

/// A batch of events waiting to be sent.
#[derive(Debug, Default)]
pub struct EventBatch {
    events: Vec<Event>,
    oldest: Option<u64>,
    dropped: u64,
    /// Sessions whose startup `segment` event this instance already holds or sent (see [`EventBatch::push`]).
    seen: alloc::collections::BTreeSet<String>,
}

/// Most sessions remembered for deduplicating `segment` events; the set is cleared when full.
pub const MAX_SEEN_SESSIONS: usize = 4096;

impl EventBatch {
    /// Most events held; beyond this new ones are counted as dropped (the edge must not grow without bound when the
    /// control plane is down).
    pub const CAPACITY: usize = 10_000;

    /// Add an event. A `segment` event that only says "startup" for a session this instance already reported is
    /// dropped (a player marks several segments `su` while its buffer fills; the first is the one that counts);
    /// stalls (`bs`) always go through. An instance that keeps no memory between requests (Fastly) dedupes
    /// nothing: the control plane keeps each session's first segment once anyway.
    pub fn push(&mut self, e: Event) {
        if e.kind == EventKind::Segment {
            let c = e.cmcd.as_deref();
            let key = c.and_then(|c| c.sid.clone()).or_else(|| e.token.clone());
            if !c.is_some_and(|c| c.bs)
                && let Some(key) = key
            {
                if self.seen.contains(&key) {
                    return;
                }
                if self.seen.len() >= MAX_SEEN_SESSIONS {
                    self.seen.clear();
                }
                self.seen.insert(key);
            }
        }
        if self.events.len() >= Self::CAPACITY {
            self.dropped += 1;
            return;
        }
        self.oldest.get_or_insert(e.at);
        self.events.push(e);
    }

    /// Whether the batch should be sent now: `max` events, or the oldest is `max_age` seconds old.
    pub fn due(&self, now: u64, max: usize, max_age: u64) -> bool {
        self.events.len() >= max || self.oldest.is_some_and(|t| now.saturating_sub(t) >= max_age)
    }

    /// Number of events held.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no events are held.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Take everything as one JSON document (`{"edge":…,"dropped":n,"events":[…]}`), leaving the batch empty.
    pub fn take_json(&mut self, edge: &str) -> Option<String> {
        self.take_pending().map(|p| p.to_json(edge))
    }

    /// Take the events and the drop count for a sender that keeps them until the control plane confirms, and gives
    /// them back with [`EventBatch::restore`] otherwise. `None` when there is nothing to send.
    pub fn take_pending(&mut self) -> Option<Pending> {
        if self.events.is_empty() && self.dropped == 0 {
            return None;
        }
        self.oldest = None;
        Some(Pending {
            events: core::mem::take(&mut self.events),
            dropped: core::mem::take(&mut self.dropped),
        })
    }

    /// Put back a batch that failed to send: its events go to the front (order kept), its drop count is added, and
    /// whatever no longer fits under [`EventBatch::CAPACITY`] is counted as dropped.
    pub fn restore(&mut self, p: Pending) {
        let mut events = p.events;
        events.append(&mut self.events);
        let over = events.len().saturating_sub(Self::CAPACITY);
        events.truncate(Self::CAPACITY);
        self.dropped += p.dropped + over as u64;
        self.oldest = events.iter().map(|e| e.at).min();
        self.events = events;
    }
}

/// Events on their way to the control plane (see [`EventBatch::take_pending`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The events, oldest first.
    pub events: Vec<Event>,
    /// Events dropped for lack of room since the last batch that was sent.
    pub dropped: u64,
}

impl Pending {
    /// The batch as the control plane takes it: `{"edge":…,"dropped":n,"events":[…]}`.
    pub fn to_json(&self, edge: &str) -> String {
        let mut out = String::with_capacity(64 + self.events.len() * 128);
        out.push_str("{\"edge\":");
        json_str(&mut out, edge);
        out.push_str(",\"dropped\":");
        out.push_str(&self.dropped.to_string());
        out.push_str(",\"events\":[");
        for (i, e) in self.events.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            e.write_json(&mut out);
        }
        out.push_str("]}");
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::{EdgeConfig, keys};
    use crate::engine::{Decision, Engine, Request, StateInput};
    use alloc::format;
    use sharegate_shared::keys::{KeyRing, SecretKey};
    use sharegate_shared::token::{Claims, Minter, Permissions, Policy, Text};

    fn engine(secret: [u8; 32]) -> Engine {
        // Through the settings parser every adapter uses, so the test follows new settings' defaults.
        let signing = format!("1:active:{}", hex::encode(secret));
        let settings: [(&str, &str); 3] = [
            (keys::SIGNING_KEYS, &signing),
            (keys::EDGE_ID, "e1"),
            (keys::STALE_POLICY, "fail_open"),
        ];
        Engine::new(EdgeConfig::from_source(&&settings[..]).unwrap())
    }

    fn mint(secret: [u8; 32], asset: &str, now: u32) -> String {
        let ring = KeyRing::with_active(1, SecretKey::new(secret), 86_400);
        let claims = Claims {
            token_id: [3; 12],
            iat: now,
            nbf: now,
            exp: now + 600,
            permissions: Permissions::PLAYBACK,
            asset: Some(Text::from(asset)),
            channel: Some(Text::from("email")),
            campaign: Some(Text::from("spring")),
            ..Claims::default()
        };
        Minter::new(&ring, Policy::default()).unwrap().mint(&claims).unwrap()
    }

    fn event_of(e: &Engine, path: &str, query: Option<&str>, now: u64) -> Event {
        let req = Request {
            method: "GET",
            host: "cdn",
            path,
            query,
            ..Request::default()
        };
        match e.decide(&req, now, StateInput { state: None, age: 0 }) {
            Decision::Deny(d) => *d.event.unwrap(),
            Decision::Allow(a) => *a.event.unwrap(),
            Decision::Preflight(_) => panic!("no preflight for GET"),
        }
    }

    #[test]
    fn refusals_without_a_valid_token_are_attributed_to_nothing() {
        let now = 1_800_000_000u32;
        let edge = engine([1; 32]);
        // What anonymous callers send: random paths, a favicon, garbage tokens, and a well-formed token signed with
        // another key whose claims name whatever the forger wanted.
        let forged = mint([2; 32], "forged-asset", now);
        let mut paths = alloc::vec![
            "/favicon.ico".to_string(),
            "/hx0/master.m3u8".into(),
            "/t/not-a-token/demo/master.m3u8".into(),
            format!("/t/{forged}/forged-asset/master.m3u8"),
            "/a/../b".into(),
        ];
        paths.extend((0..150).map(|i| format!("/hx{i:04x}/seg_{i}.ts")));
        for p in &paths {
            let ev = event_of(&edge, p, None, u64::from(now));
            assert_eq!(ev.kind, EventKind::Deny, "{p}");
            assert_eq!(
                (&ev.asset, &ev.share, &ev.channel, &ev.campaign),
                (&None, &None, &None, &None),
                "{p}: {ev:?}"
            );
        }
        let q = format!("sg={forged}");
        let ev = event_of(&edge, "/forged-asset/master.m3u8", Some(&q), u64::from(now));
        assert_eq!(ev.asset, None, "a forged token in the query is not trusted either");

        // A verified token is attributed to its claims, even when it is refused (here: the wrong asset).
        let good = mint([1; 32], "demo", now);
        let ev = event_of(&edge, &format!("/t/{good}/other/master.m3u8"), None, u64::from(now));
        assert_eq!(ev.reason, Some("out_of_scope"));
        assert_eq!(
            (ev.asset.as_deref(), ev.channel.as_deref(), ev.campaign.as_deref()),
            (Some("demo"), Some("email"), Some("spring"))
        );
    }

    struct NothingRevoked;
    impl crate::engine::Revocations for NothingRevoked {
        fn check(&self, _: &sharegate_shared::revocation::Subject<'_>) -> sharegate_shared::revocation::Revoked {
            sharegate_shared::revocation::Revoked::No
        }
    }

    fn decide<'a>(e: &'a Engine, req: &Request<'a>, now: u64) -> Decision<'a> {
        e.decide(req, now, StateInput::fresh(&NothingRevoked))
    }

    #[test]
    fn cmcd_rides_on_events_never_to_the_origin_or_the_cache_key() {
        let now = 1_800_000_000u32;
        let edge = engine([1; 32]);
        let good = mint([1; 32], "demo", now);
        let seg = format!("/t/{good}/demo/v0/seg_001.ts");
        let cmcd = "CMCD=bl%3D0%2Cbr%3D35%2Ccid%3D%22demo%22%2Cot%3Dav%2Csid%3D%22view-1%22%2Csu";
        let plain = Request {
            method: "GET",
            host: "cdn",
            path: &seg,
            ..Request::default()
        };
        let with_query = Request {
            query: Some(cmcd),
            ..plain
        };
        let with_headers = Request {
            cmcd_headers: [Some("bl=100"), Some("ot=v"), Some("bs"), Some("sid=\"view-2\"")],
            ..plain
        };
        fn allow(d: Decision<'_>) -> crate::engine::Allow<'_> {
            match d {
                Decision::Allow(a) => a,
                other => panic!("{other:?}"),
            }
        }
        let a0 = allow(decide(&edge, &plain, u64::from(now)));
        assert!(a0.event.is_none(), "a segment without CMCD makes no event");
        let a1 = allow(decide(&edge, &with_query, u64::from(now)));
        let a2 = allow(decide(&edge, &with_headers, u64::from(now)));
        for a in [&a1, &a2] {
            assert_eq!(
                (a.cache_key(), &a.origin_path, &a.origin_query),
                (a0.cache_key(), &a0.origin_path, &a0.origin_query)
            );
        }
        let e1 = *a1.event.clone().unwrap();
        assert_eq!(e1.kind, EventKind::Segment);
        let c = e1.cmcd.as_deref().unwrap();
        assert_eq!(
            (c.sid.as_deref(), c.ot, c.su, c.bs),
            (Some("view-1"), Some("av"), true, false)
        );
        assert_eq!(
            e1.token.as_deref(),
            Some(format!("{now}-{}", hex::encode([3u8; 12])).as_str())
        );
        let json = Pending {
            events: alloc::vec![e1.clone(), *a2.event.clone().unwrap()],
            dropped: 0,
        }
        .to_json("e1");
        assert!(json.contains("\"kind\":\"segment\""), "{json}");
        assert!(
            json.contains("\"sid\":\"view-1\",\"cid\":\"demo\",\"ot\":\"av\",\"su\":true,\"bl\":0,\"br\":35"),
            "{json}"
        );
        assert!(
            json.contains("\"sid\":\"view-2\",\"ot\":\"v\",\"bs\":true,\"bl\":100"),
            "{json}"
        );
        // The multivariant playlist's open carries the session id too.
        let mv = format!("/t/{good}/demo/master.m3u8");
        let open = allow(decide(
            &edge,
            &Request {
                path: &mv,
                ..with_query
            },
            u64::from(now),
        ));
        let e = *open.event.unwrap();
        assert_eq!(e.kind, EventKind::PlaylistOpen);
        assert_eq!(e.cmcd.unwrap().sid.as_deref(), Some("view-1"));

        // Startup segments of one session are one event per instance; stalls always go through.
        let mut b = EventBatch::default();
        for _ in 0..3 {
            b.push(e1.clone());
        }
        assert_eq!(b.len(), 1);
        let mut stall = e1.clone();
        if let Some(c) = stall.cmcd.as_mut() {
            c.bs = true;
        }
        b.push(stall.clone());
        b.push(stall);
        assert_eq!(b.len(), 3);
    }

    fn ev(at: u64, asset: &str) -> Event {
        Event {
            kind: EventKind::Deny,
            reason: Some("revoked"),
            at,
            asset: Some(asset.into()),
            share: None,
            channel: Some("em\"ail\n".into()),
            campaign: None,
            edge: "e1".into(),
            token: None,
            plan: None,
            cmcd: None,
        }
    }

    #[test]
    fn batches_are_valid_json_and_drain() {
        let mut b = EventBatch::default();
        assert!(!b.due(0, 10, 5));
        b.push(ev(100, "a"));
        b.push(ev(101, "b"));
        assert!(!b.due(101, 10, 5));
        assert!(b.due(105, 10, 5));
        assert!(b.due(101, 2, 5));
        let json = b.take_json("e1").unwrap();
        assert!(json.starts_with("{\"edge\":\"e1\",\"dropped\":0,\"events\":[{\"kind\":\"deny\",\"at\":100"));
        assert!(json.contains("\"channel\":\"em\\\"ail\\u000a\""));
        assert!(b.is_empty());
        assert!(b.take_json("e1").is_none());
    }

    #[test]
    fn capacity_is_bounded_and_drops_counted() {
        let mut b = EventBatch::default();
        for i in 0..(EventBatch::CAPACITY as u64 + 5) {
            b.push(ev(i, "x"));
        }
        assert_eq!(b.len(), EventBatch::CAPACITY);
        let json = b.take_json("e").unwrap();
        assert!(json.contains("\"dropped\":5"));
    }

    #[test]
    fn a_failed_send_loses_nothing_and_counts_what_no_longer_fits() {
        let mut b = EventBatch::default();
        for i in 0..(EventBatch::CAPACITY as u64 + 3) {
            b.push(ev(i, "x"));
        }
        let sent = b.take_pending().unwrap();
        assert_eq!((sent.events.len(), sent.dropped), (EventBatch::CAPACITY, 3));
        assert!(b.take_pending().is_none());
        // Two more arrive while the send fails; the batch is put back in front of them.
        b.push(ev(1_000_000, "late"));
        b.push(ev(1_000_001, "late"));
        b.restore(sent);
        assert_eq!(b.len(), EventBatch::CAPACITY);
        let again = b.take_pending().unwrap();
        assert_eq!(again.events[0].at, 0, "order kept, the restored batch first");
        assert_eq!(again.dropped, 3 + 2, "the earlier drops and the two that no longer fit");
        assert!(again.to_json("e").contains("\"dropped\":5"));
    }
}
