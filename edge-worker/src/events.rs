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
}

impl EventKind {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Deny => "deny",
            EventKind::Expiry => "expiry",
            EventKind::PlaylistOpen => "playlist_open",
            EventKind::StateStale => "state_stale",
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
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                out.push_str(",\"");
                out.push_str(k);
                out.push_str("\":");
                json_str(out, v);
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
}

impl EventBatch {
    /// Most events held; beyond this new ones are counted as dropped (the edge must not grow without bound when the
    /// control plane is down).
    pub const CAPACITY: usize = 10_000;

    /// Add an event.
    pub fn push(&mut self, e: Event) {
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
            Decision::Deny(d) => d.event.unwrap(),
            Decision::Allow(a) => a.event.unwrap(),
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
