//! View ids: one per page load of a player, minted with the page, signed so an anonymous beacon endpoint can't be
//! filled with views nobody opened, and short enough to ride in CMCD's `sid` (≤ 64 characters).
//!
//! `<18 chars: base64url(9 random bytes ‖ u32 BE issued-at)>.<20 chars: base64url(first 15 bytes of the MAC)>`, the
//! MAC being HMAC-SHA256 under a key derived from the state key over `view-v1|<id part>|<share>|<asset>|<channel>|
//! <campaign>`. The attribution is bound to the id: a beacon (or an edge event carrying the id as CMCD `sid`) that
//! names other dimensions than the page's fails verification.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use sharegate_shared::revocation::StateKey;
use subtle::ConstantTimeEq;

/// How long a view id is accepted after it was minted.
pub const VIEW_TTL_SECS: u64 = 24 * 3600;
/// How far in the future a view id's issue time may be (replica clocks).
pub const VIEW_SKEW_SECS: u64 = 60;
/// Length of a view id.
pub const VIEW_ID_LEN: usize = 39;

const MAC_LEN: usize = 15;

/// The key view ids are signed with.
pub struct ViewKey(StateKey);

impl std::fmt::Debug for ViewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ViewKey(<redacted>)")
    }
}

/// What a view id is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ViewDims<'a> {
    /// Share id.
    pub share: &'a str,
    /// Asset id.
    pub asset: &'a str,
    /// Channel (empty: none).
    pub channel: &'a str,
    /// Campaign (empty: none).
    pub campaign: &'a str,
}

/// Why a view id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewError {
    /// Not a view id, or its MAC does not match the dimensions given.
    Forged,
    /// Older than [`VIEW_TTL_SECS`] or too far in the future.
    Expired,
}

impl ViewKey {
    /// Derive the view key from the state key (every replica has it, so every replica verifies every view).
    pub fn from_state_key(state: &StateKey) -> Self {
        let mut k = state.derive(b"sharegate view-id key v1");
        let key = StateKey::new(k);
        k.fill(0);
        ViewKey(key)
    }

    fn mac(&self, id: &str, d: &ViewDims<'_>) -> [u8; MAC_LEN] {
        let mut msg = Vec::with_capacity(64 + id.len() + d.share.len() + d.asset.len());
        for part in [
            b"view-v1".as_slice(),
            id.as_bytes(),
            d.share.as_bytes(),
            d.asset.as_bytes(),
        ] {
            msg.extend_from_slice(part);
            msg.push(b'|');
        }
        msg.extend_from_slice(d.channel.as_bytes());
        msg.push(b'|');
        msg.extend_from_slice(d.campaign.as_bytes());
        let full = self.0.derive(&msg);
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// A fresh view id issued at `now` for these dimensions.
    pub fn mint(&self, now: u64, d: &ViewDims<'_>) -> String {
        let mut raw = [0u8; 13];
        // A failed entropy source only weakens uniqueness (the MAC still binds the id); never fail a page for it.
        let _ = getrandom::fill(&mut raw[..9]);
        raw[9..].copy_from_slice(&u32::try_from(now).unwrap_or(u32::MAX).to_be_bytes());
        let id = B64.encode(raw);
        let mac = B64.encode(self.mac(&id, d));
        format!("{id}.{mac}")
    }

    /// Check a view id against the dimensions it claims; its issue time (unix seconds) when valid at `now`.
    pub fn verify(&self, view: &str, d: &ViewDims<'_>, now: u64) -> Result<u64, ViewError> {
        let issued = parse(view).ok_or(ViewError::Forged)?;
        let (id, mac) = view.split_at(18);
        let mac = B64.decode(&mac[1..]).map_err(|_| ViewError::Forged)?;
        if !bool::from(self.mac(id, d).as_slice().ct_eq(&mac)) {
            return Err(ViewError::Forged);
        }
        if issued > now + VIEW_SKEW_SECS || now.saturating_sub(issued) > VIEW_TTL_SECS {
            return Err(ViewError::Expired);
        }
        Ok(issued)
    }
}

/// The issue time of something shaped like a view id (not verified).
pub fn parse(view: &str) -> Option<u64> {
    if view.len() != VIEW_ID_LEN || view.as_bytes()[18] != b'.' {
        return None;
    }
    let raw = B64.decode(&view[..18]).ok()?;
    let t: [u8; 4] = raw.get(9..13)?.try_into().ok()?;
    B64.decode(&view[19..]).ok().filter(|m| m.len() == MAC_LEN)?;
    Some(u64::from(u32::from_be_bytes(t)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(b: u8) -> ViewKey {
        ViewKey::from_state_key(&StateKey::new([b; 32]))
    }

    const D: ViewDims<'static> = ViewDims {
        share: "sh_abc",
        asset: "demo",
        channel: "email",
        campaign: "spring",
    };

    #[test]
    fn minted_ids_verify_and_fit_cmcd_sid() {
        let k = key(1);
        let v = k.mint(1_800_000_000, &D);
        assert_eq!(v.len(), VIEW_ID_LEN);
        assert!(v.len() <= 64);
        assert_eq!(k.verify(&v, &D, 1_800_000_100), Ok(1_800_000_000));
        assert_ne!(k.mint(1_800_000_000, &D), v, "random part");
    }

    #[test]
    fn other_dimensions_keys_or_bit_flips_are_forged() {
        let k = key(1);
        let v = k.mint(1_800_000_000, &D);
        let now = 1_800_000_001;
        for other in [
            ViewDims { share: "sh_abd", ..D },
            ViewDims { asset: "demo2", ..D },
            ViewDims { channel: "", ..D },
            ViewDims {
                campaign: "spring2",
                ..D
            },
            // The separator can't be moved between fields.
            ViewDims {
                share: "sh_abc|demo",
                asset: "",
                ..D
            },
        ] {
            assert_eq!(k.verify(&v, &other, now), Err(ViewError::Forged), "{other:?}");
        }
        assert_eq!(key(2).verify(&v, &D, now), Err(ViewError::Forged));
        let bytes = v.as_bytes();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.to_vec();
                b[i] ^= 1 << bit;
                let Ok(s) = String::from_utf8(b) else { continue };
                assert!(k.verify(&s, &D, now).is_err(), "flip {i}/{bit}");
            }
        }
        for junk in ["", ".", "a.b", &"x".repeat(39), &"é".repeat(20), &format!("{v}x")] {
            assert_eq!(k.verify(junk, &D, now), Err(ViewError::Forged), "{junk:?}");
        }
    }

    #[test]
    fn expiry_boundaries() {
        let k = key(1);
        let t = 1_800_000_000;
        let v = k.mint(t, &D);
        assert!(k.verify(&v, &D, t + VIEW_TTL_SECS).is_ok());
        assert_eq!(k.verify(&v, &D, t + VIEW_TTL_SECS + 1), Err(ViewError::Expired));
        assert!(k.verify(&v, &D, t - VIEW_SKEW_SECS).is_ok());
        assert_eq!(k.verify(&v, &D, t - VIEW_SKEW_SECS - 1), Err(ViewError::Expired));
    }
}
