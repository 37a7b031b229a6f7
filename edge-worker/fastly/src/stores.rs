//! Settings from the service's stores, through the shared parser: secrets from the Secret Store, everything else
//! from the Config Store, under the same names as on every other runtime (`docs/edge.md`). The store names and which
//! settings are secret are the contract's (`sharegate_edge::contract::fastly`).

use fastly::{ConfigStore, SecretStore};
use sharegate_edge::ConfigSource;
use sharegate_edge::contract::fastly::{CONFIG_STORE, SECRET_NAMES, SECRET_STORE};

/// The two stores, opened once per request.
pub struct Stores {
    config: ConfigStore,
    secrets: Option<SecretStore>,
}

impl Stores {
    /// Open the stores; `Err` names the one that is missing (a deployment without a Config Store is broken).
    pub fn open() -> Result<Stores, &'static str> {
        let config = ConfigStore::try_open(CONFIG_STORE).map_err(|_| CONFIG_STORE)?;
        // Without a Secret Store the signing keys are missing, which the parser reports by name.
        let secrets = SecretStore::open(SECRET_STORE).ok();
        Ok(Stores { config, secrets })
    }
}

impl ConfigSource for Stores {
    fn get(&self, key: &str) -> Option<String> {
        if SECRET_NAMES.contains(&key) {
            let secret = self.secrets.as_ref()?.try_get(key).ok()??;
            let plain = secret.try_plaintext().ok()?;
            return String::from_utf8(plain.to_vec()).ok().map(|s| s.trim().to_string());
        }
        self.config.try_get(key).ok().flatten()
    }
}
