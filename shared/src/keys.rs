//! Signing keys and the key ring.
//!
//! Each key has a 16-bit id that every token names, and a state: `next` (published to edges, not yet used to mint),
//! `active` (mints), `retiring` (verifies only, until every token it signed has expired). Edges accept all three,
//! so a rotation published before first use never breaks a link in flight. Secret bytes never appear in `Debug`,
//! `Display` or errors, and are zeroed when dropped.

use alloc::vec::Vec;
use core::fmt;
use zeroize::Zeroize;

/// A key id, named by every token.
pub type KeyId = u16;

/// Length of a signing key's secret, in bytes (the HMAC-SHA256 block is 64; 32 random bytes are full strength).
pub const SECRET_LEN: usize = 32;

/// A 256-bit secret. Redacted in `Debug`, zeroed on drop, compared only through MACs.
#[derive(Clone)]
pub struct SecretKey([u8; SECRET_LEN]);

impl SecretKey {
    /// Wrap 32 secret bytes (from a CSPRNG or a secret store).
    pub fn new(bytes: [u8; SECRET_LEN]) -> Self {
        SecretKey(bytes)
    }

    /// Parse 64 hex digits, the form keys take in environment variables and secret stores.
    pub fn from_hex(hex: &str) -> Result<Self, KeyError> {
        let hex = hex.trim().as_bytes();
        if hex.len() != SECRET_LEN * 2 {
            return Err(KeyError::BadSecret);
        }
        let mut out = [0u8; SECRET_LEN];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or(KeyError::BadSecret)?;
            let lo = hex_val(pair[1]).ok_or(KeyError::BadSecret)?;
            out[i] = (hi << 4) | lo;
        }
        Ok(SecretKey(out))
    }

    /// The secret bytes, for keying a MAC. Keep the borrow short.
    pub fn expose(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published to edges ahead of use; verifies, does not mint yet.
    Next,
    /// The one key that mints.
    Active,
    /// No longer mints; verifies until `since + max_ttl`, when the last token it signed has expired.
    Retiring {
        /// When the key stopped minting (unix seconds).
        since: u64,
    },
}

impl KeyState {
    /// A stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Active => "active",
            KeyState::Retiring { .. } => "retiring",
        }
    }
}

/// One key in the ring.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    /// The id tokens name.
    pub id: KeyId,
    /// Its state.
    pub state: KeyState,
    /// Its secret.
    pub secret: SecretKey,
}

/// Key ring errors. None of them carries secret material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// A secret was not 64 hex digits.
    BadSecret,
    /// The id is already in the ring.
    DuplicateId,
    /// There is already a `next` key; promote or remove it first.
    NextExists,
    /// Promotion needs a `next` key.
    NoNextKey,
    /// No key with that id.
    UnknownKey,
    /// The active key cannot be removed; rotate first.
    KeyIsActive,
    /// A retiring key must stay until every token it signed has expired.
    StillInUse,
}

impl KeyError {
    /// Stable snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyError::BadSecret => "bad_secret",
            KeyError::DuplicateId => "duplicate_key_id",
            KeyError::NextExists => "next_key_exists",
            KeyError::NoNextKey => "no_next_key",
            KeyError::UnknownKey => "unknown_key",
            KeyError::KeyIsActive => "key_is_active",
            KeyError::StillInUse => "key_still_in_use",
        }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for KeyError {}

/// The set of keys an edge or a control plane holds.
///
/// Invariants: ids are unique; at most one `active` and at most one `next` key; a `retiring` key is kept for at
/// least `max_ttl` seconds after it stopped minting.
#[derive(Debug, Clone)]
pub struct KeyRing {
    entries: Vec<KeyEntry>,
    max_ttl: u32,
}

impl KeyRing {
    /// An empty ring whose retiring keys live at least `max_ttl` seconds (the longest token lifetime allowed).
    pub fn new(max_ttl: u32) -> Self {
        KeyRing {
            entries: Vec::new(),
            max_ttl,
        }
    }

    /// A ring with one active key: the usual start, and handy in tests.
    pub fn with_active(id: KeyId, secret: SecretKey, max_ttl: u32) -> Self {
        KeyRing {
            entries: alloc::vec![KeyEntry {
                id,
                state: KeyState::Active,
                secret
            }],
            max_ttl,
        }
    }

    /// Insert a key in a given state, as read from a store or an edge's secrets. Refuses a second active or next key.
    pub fn insert(&mut self, id: KeyId, state: KeyState, secret: SecretKey) -> Result<(), KeyError> {
        if self.get(id).is_some() {
            return Err(KeyError::DuplicateId);
        }
        let clash = |s: KeyState| self.entries.iter().any(|e| e.state == s);
        match state {
            KeyState::Next if clash(KeyState::Next) => return Err(KeyError::NextExists),
            KeyState::Active if clash(KeyState::Active) => return Err(KeyError::KeyIsActive),
            _ => {}
        }
        self.entries.push(KeyEntry { id, state, secret });
        Ok(())
    }

    /// Add the `next` key, to be published to edges before it mints.
    pub fn add_next(&mut self, id: KeyId, secret: SecretKey) -> Result<(), KeyError> {
        self.insert(id, KeyState::Next, secret)
    }

    /// Rotate: `next` becomes `active`, the old `active` becomes `retiring` from `now`.
    pub fn promote(&mut self, now: u64) -> Result<(), KeyError> {
        let next = self
            .entries
            .iter()
            .position(|e| e.state == KeyState::Next)
            .ok_or(KeyError::NoNextKey)?;
        for e in &mut self.entries {
            if e.state == KeyState::Active {
                e.state = KeyState::Retiring { since: now };
            }
        }
        self.entries[next].state = KeyState::Active;
        Ok(())
    }

    /// Remove a key. The active key is refused, and so is a retiring key before `since + max_ttl`.
    pub fn remove(&mut self, id: KeyId, now: u64) -> Result<(), KeyError> {
        let i = self
            .entries
            .iter()
            .position(|e| e.id == id)
            .ok_or(KeyError::UnknownKey)?;
        match self.entries[i].state {
            KeyState::Active => return Err(KeyError::KeyIsActive),
            KeyState::Retiring { since } if now < since.saturating_add(u64::from(self.max_ttl)) => {
                return Err(KeyError::StillInUse);
            }
            _ => {}
        }
        self.entries.remove(i);
        Ok(())
    }

    /// Drop every retiring key whose last token has expired; returns their ids.
    pub fn prune(&mut self, now: u64) -> Vec<KeyId> {
        let max_ttl = u64::from(self.max_ttl);
        let mut dropped = Vec::new();
        self.entries.retain(|e| match e.state {
            KeyState::Retiring { since } if now >= since.saturating_add(max_ttl) => {
                dropped.push(e.id);
                false
            }
            _ => true,
        });
        dropped
    }

    /// The minting key, if any.
    pub fn active(&self) -> Option<&KeyEntry> {
        self.entries.iter().find(|e| e.state == KeyState::Active)
    }

    /// A key by id.
    pub fn get(&self, id: KeyId) -> Option<&KeyEntry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// All keys.
    pub fn iter(&self) -> impl Iterator<Item = &KeyEntry> {
        self.entries.iter()
    }

    /// The minimum time a retiring key is kept.
    pub fn max_ttl(&self) -> u32 {
        self.max_ttl
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use alloc::format;

    fn key(b: u8) -> SecretKey {
        SecretKey::new([b; 32])
    }

    #[test]
    fn secret_never_in_debug() {
        let k = SecretKey::from_hex(&"ab".repeat(32)).unwrap();
        let ring = KeyRing::with_active(7, k, 3600);
        let dbg = format!("{ring:?}");
        assert!(!dbg.contains("ab, ab") && !dbg.contains("171") && !dbg.to_lowercase().contains("abab"));
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn hex_parsing() {
        assert!(SecretKey::from_hex(&"0F".repeat(32)).is_ok());
        assert_eq!(SecretKey::from_hex("00").unwrap_err(), KeyError::BadSecret);
        assert_eq!(SecretKey::from_hex(&"zz".repeat(32)).unwrap_err(), KeyError::BadSecret);
    }

    #[test]
    fn rotation_lifecycle() {
        let mut ring = KeyRing::with_active(1, key(1), 100);
        assert_eq!(ring.promote(0).unwrap_err(), KeyError::NoNextKey);
        ring.add_next(2, key(2)).unwrap();
        assert_eq!(ring.add_next(3, key(3)).unwrap_err(), KeyError::NextExists);
        assert_eq!(ring.add_next(1, key(3)).unwrap_err(), KeyError::DuplicateId);
        assert_eq!(ring.active().unwrap().id, 1);
        ring.promote(1000).unwrap();
        assert_eq!(ring.active().unwrap().id, 2);
        assert_eq!(ring.get(1).unwrap().state, KeyState::Retiring { since: 1000 });
        assert_eq!(ring.remove(2, 5000).unwrap_err(), KeyError::KeyIsActive);
        // A retiring key must outlive every token it signed.
        assert_eq!(ring.remove(1, 1099).unwrap_err(), KeyError::StillInUse);
        assert!(ring.prune(1099).is_empty());
        assert_eq!(ring.prune(1100), alloc::vec![1]);
        assert!(ring.get(1).is_none());
        assert_eq!(ring.remove(9, 0).unwrap_err(), KeyError::UnknownKey);
    }
}
