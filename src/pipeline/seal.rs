//! The authentication tag of phase envelopes: an HMAC-SHA256 of the body
//! with a key every worker shares, carried in the `x-netra-seal` header.
//!
//! A phase queue trusts only what netra itself published: an envelope with
//! no tag, or a wrong one, is dead-lettered as forged, even if someone can
//! reach the queue. The key is `NETRA_ENVELOPE_KEY` when set, otherwise a
//! random key kept in the database (`shared_keys`), which every worker of
//! the deployment reads at start.

use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;

use crate::config::Config;

/// The header that carries the tag.
pub const HEADER: &str = "x-netra-seal";

/// The name of the database-kept key.
const KEY_NAME: &str = "envelope-hmac";

/// Signs and checks envelope bodies. `Debug` never shows the key.
#[derive(Clone)]
pub struct Seal {
    /// The keyed MAC, cloned for each body (cheaper than keying again).
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seal(***)")
    }
}

impl Seal {
    /// A seal over a key (built at start-up).
    pub fn new(key: &[u8]) -> Self {
        Self {
            mac: <Hmac<Sha256> as Mac>::new_from_slice(key)
                .expect("HMAC accepts keys of any length"),
        }
    }

    /// The configured key, or the deployment's database-kept one.
    pub async fn load(config: &Config, pool: &sqlx::PgPool) -> Result<Self, crate::store::Error> {
        match &config.envelope_key {
            Some(k) => Ok(Self::new(k.expose_secret().as_bytes())),
            None => Ok(Self::new(
                &crate::store::keys::shared_key(pool, KEY_NAME).await?,
            )),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        self.mac.clone()
    }

    /// The tag of a body, as lower-case hex.
    pub fn tag(&self, body: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(body);
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// True when `tag` is the body's tag (compared in constant time).
    pub fn verify(&self, body: &[u8], tag: &str) -> bool {
        let Some(bytes) = decode_hex(tag) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(body);
        mac.verify_slice(&bytes).is_ok()
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_verifies_only_the_same_body_and_key() {
        let seal = Seal::new(b"k1");
        let tag = seal.tag(b"body");
        assert!(seal.verify(b"body", &tag));
        assert!(!seal.verify(b"body2", &tag));
        assert!(!Seal::new(b"k2").verify(b"body", &tag));
        assert!(!seal.verify(b"body", "nothex"));
        assert!(!seal.verify(b"body", &tag[..62]));
        assert_eq!(format!("{seal:?}"), "Seal(***)");
    }
}
