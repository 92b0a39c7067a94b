//! API keys: generation, hashing, the in-memory key ring, and the request guard.
//!
//! A generated key is `grk_<id>_<secret>`: a 12-hex-digit id and 192 random bits. The store
//! keeps only SHA-256 of the whole key; a request's key is found by its id and its hash
//! compared in constant time. Keys from `GUARDRANK_ADMIN_KEY` / `GUARDRANK_PLUGIN_KEY` live
//! only in memory, for as long as the process runs with them.

use crate::events::Scope;
use crate::store::KeyRecord;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::RwLock;
use subtle::ConstantTimeEq;

/// Minimum length of a key given in the environment.
pub const MIN_ENV_KEY_LEN: usize = 32;

/// The identity behind an authenticated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub key_id: String,
    pub scope: Scope,
}

/// SHA-256 of a key.
#[must_use]
pub fn hash_key(key: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.finalize().into()
}

/// A fresh random key and its id.
#[must_use]
pub fn generate_key() -> (String, String) {
    let mut rng = rand::rng();
    let mut id = [0u8; 6];
    let mut secret = [0u8; 24];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let id = hex::encode(id);
    let key = format!("grk_{id}_{}", hex::encode(secret));
    (id, key)
}

/// A new key record and the key itself (shown once).
#[must_use]
pub fn new_key(scope: Scope, now_ms: i64) -> (KeyRecord, String) {
    let (id, key) = generate_key();
    let rec = KeyRecord {
        id,
        scope,
        hash: hash_key(&key),
        created_at_ms: now_ms,
        revoked_at_ms: None,
        last_used_at_ms: None,
    };
    (rec, key)
}

#[derive(Debug, Clone)]
struct Entry {
    scope: Scope,
    hash: [u8; 32],
    revoked: bool,
}

/// The keys a replica accepts: stored keys (by id) and environment keys.
#[derive(Debug, Default)]
pub struct KeyRing {
    stored: RwLock<HashMap<String, Entry>>,
    env: Vec<(String, Scope, [u8; 32])>,
}

/// Why an environment key was refused at start.
#[derive(Debug, thiserror::Error)]
#[error("{var} is {len} characters long; keys must have at least {MIN_ENV_KEY_LEN}")]
pub struct WeakKey {
    pub var: &'static str,
    pub len: usize,
}

impl KeyRing {
    /// A key ring with the environment keys (`None` when unset).
    ///
    /// # Errors
    /// A key shorter than [`MIN_ENV_KEY_LEN`].
    pub fn new(admin: Option<&str>, plugin: Option<&str>) -> Result<KeyRing, WeakKey> {
        let mut env = Vec::new();
        for (var, id, scope, key) in [
            ("GUARDRANK_ADMIN_KEY", "env-admin", Scope::Admin, admin),
            ("GUARDRANK_PLUGIN_KEY", "env-plugin", Scope::Plugin, plugin),
        ] {
            if let Some(k) = key {
                if k.chars().count() < MIN_ENV_KEY_LEN {
                    return Err(WeakKey { var, len: k.chars().count() });
                }
                env.push((id.to_string(), scope, hash_key(k)));
            }
        }
        Ok(KeyRing { stored: RwLock::new(HashMap::new()), env })
    }

    /// Whether any environment key is configured.
    #[must_use]
    pub fn has_env_keys(&self) -> bool {
        !self.env.is_empty()
    }

    /// Adds or replaces a stored key.
    pub fn upsert(&self, rec: &KeyRecord) {
        if let Ok(mut m) = self.stored.write() {
            m.insert(rec.id.clone(), Entry { scope: rec.scope, hash: rec.hash, revoked: rec.revoked_at_ms.is_some() });
        }
    }

    /// Marks a key revoked.
    pub fn revoke(&self, id: &str) {
        if let Ok(mut m) = self.stored.write()
            && let Some(e) = m.get_mut(id)
        {
            e.revoked = true;
        }
    }

    /// The caller a presented key belongs to, if it is valid and not revoked.
    #[must_use]
    pub fn authenticate(&self, presented: &str) -> Option<Caller> {
        let h = hash_key(presented);
        if let Some(rest) = presented.strip_prefix("grk_") {
            let id = rest.split('_').next().unwrap_or("");
            let m = self.stored.read().ok()?;
            let e = m.get(id)?;
            if bool::from(e.hash.ct_eq(&h)) && !e.revoked {
                return Some(Caller { key_id: id.to_string(), scope: e.scope });
            }
            return None;
        }
        // Environment keys: compare against every one, in constant time each.
        let mut found = None;
        for (id, scope, eh) in &self.env {
            if bool::from(eh.ct_eq(&h)) {
                found = Some(Caller { key_id: id.clone(), scope: *scope });
            }
        }
        found
    }
}

/// The bearer token of an `Authorization` header value.
#[must_use]
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_authenticate_until_revoked() {
        let ring = KeyRing::new(None, None).expect("no env keys");
        let (rec, key) = new_key(Scope::Plugin, 1);
        assert!(key.len() >= 4 + 12 + 1 + 48);
        assert!(ring.authenticate(&key).is_none());
        ring.upsert(&rec);
        assert_eq!(ring.authenticate(&key), Some(Caller { key_id: rec.id.clone(), scope: Scope::Plugin }));
        let forged = format!("grk_{}_{}", rec.id, "0".repeat(48));
        assert!(ring.authenticate(&forged).is_none());
        ring.revoke(&rec.id);
        assert!(ring.authenticate(&key).is_none());
    }

    #[test]
    fn environment_keys_must_be_long_and_match_exactly() {
        assert!(KeyRing::new(Some("short"), None).is_err());
        let admin = "a".repeat(40);
        let ring = KeyRing::new(Some(&admin), None).expect("long enough");
        assert_eq!(ring.authenticate(&admin).map(|c| c.scope), Some(Scope::Admin));
        assert!(ring.authenticate(&"a".repeat(39)).is_none());
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }
}
