//! Settings from the service's stores, through the shared parser: secrets from the Secret Store, everything else
//! from the Config Store, under the same names as on every other runtime (`docs/edge.md`). The store names and which
//! settings are secret are the contract's (`sharegate_edge::contract::fastly`).
//!
//! Each store is read with **one lookup per request** when it holds the bundle key — `SHAREGATE_SETTINGS` in the
//! Config Store, `SHAREGATE_SECRETS` in the Secret Store, each a value of `NAME=value` lines — instead of one lookup
//! per setting (about 30, measured at ~80 µs per request in Viceroy). A store without its bundle key is read key by
//! key as before, so existing services keep working; a store with one is read from the bundle only.

use fastly::{ConfigStore, SecretStore};
use sharegate_edge::ConfigSource;
use sharegate_edge::contract::fastly::{CONFIG_STORE, SECRET_NAMES, SECRET_STORE, SECRETS_KEY, SETTINGS_KEY};

/// `NAME=value` lines, as read from a bundle key.
type Bundle = Vec<(String, String)>;

/// Parse a bundle: `NAME=value` per line (split at the first `=`, both sides trimmed); blank lines and lines
/// starting with `#` are skipped. `None` for a line without `=` or a name given twice.
pub fn parse_bundle(text: &str) -> Option<Bundle> {
    let mut out: Bundle = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line.split_once('=')?;
        let name = name.trim();
        if name.is_empty() || out.iter().any(|(n, _)| n == name) {
            return None;
        }
        out.push((name.to_string(), value.trim().to_string()));
    }
    Some(out)
}

fn from_bundle(bundle: &Bundle, key: &str) -> Option<String> {
    bundle.iter().find(|(n, _)| n == key).map(|(_, v)| v.clone())
}

/// Where the plain settings come from.
enum Plain {
    Bundle(Bundle),
    Keys(ConfigStore),
}

/// Where the secrets come from.
enum Secrets {
    Bundle(Bundle),
    Keys(SecretStore),
    None,
}

/// The two stores, opened once per request.
pub struct Stores {
    plain: Plain,
    secrets: Secrets,
}

impl Stores {
    /// Open the stores and read the bundles; `Err` names the store or bundle at fault (a deployment without a
    /// Config Store is broken, and so is a bundle that does not parse).
    pub fn open() -> Result<Stores, &'static str> {
        let config = ConfigStore::try_open(CONFIG_STORE).map_err(|_| CONFIG_STORE)?;
        let plain = match config.try_get(SETTINGS_KEY).ok().flatten() {
            Some(text) => Plain::Bundle(parse_bundle(&text).ok_or(SETTINGS_KEY)?),
            None => Plain::Keys(config),
        };
        // Without a Secret Store the signing keys are missing, which the parser reports by name.
        let secrets = match SecretStore::open(SECRET_STORE) {
            Err(_) => Secrets::None,
            Ok(store) => match store.try_get(SECRETS_KEY).ok().flatten() {
                Some(secret) => {
                    let plain = secret.try_plaintext().map_err(|_| SECRETS_KEY)?;
                    let text = std::str::from_utf8(&plain).map_err(|_| SECRETS_KEY)?;
                    Secrets::Bundle(parse_bundle(text).ok_or(SECRETS_KEY)?)
                }
                None => Secrets::Keys(store),
            },
        };
        Ok(Stores { plain, secrets })
    }
}

impl ConfigSource for Stores {
    fn get(&self, key: &str) -> Option<String> {
        if SECRET_NAMES.contains(&key) {
            return match &self.secrets {
                Secrets::Bundle(b) => from_bundle(b, key),
                Secrets::Keys(store) => {
                    let secret = store.try_get(key).ok()??;
                    let plain = secret.try_plaintext().ok()?;
                    String::from_utf8(plain.to_vec()).ok().map(|s| s.trim().to_string())
                }
                Secrets::None => None,
            };
        }
        match &self.plain {
            // A secret written into the settings bundle is never read from it (the check above returned).
            Plain::Bundle(b) => from_bundle(b, key),
            Plain::Keys(config) => config.try_get(key).ok().flatten(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bundle;

    #[test]
    fn bundles_parse_name_value_lines() {
        let b = parse_bundle("# comment\n\nSHAREGATE_ORIGIN = http://a, http://b \nX=a=b\n").expect("parses");
        assert_eq!(
            b,
            vec![
                ("SHAREGATE_ORIGIN".to_string(), "http://a, http://b".to_string()),
                ("X".to_string(), "a=b".to_string())
            ]
        );
        assert!(parse_bundle("no equals sign").is_none());
        assert!(parse_bundle("A=1\nA=2").is_none());
        assert!(parse_bundle("=1").is_none());
        assert_eq!(parse_bundle(""), Some(vec![]));
    }
}
