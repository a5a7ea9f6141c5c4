//! Authentication of a push request: the API key (checked before the body is read), the HMAC
//! signature over `timestamp + nonce + raw_body`, and the freshness of the timestamp.
//!
//! Both comparisons take constant time: the key is compared as SHA-256 digests with `subtle`
//! (so its length does not leak either), the signature through `Mac::verify_slice`. Neither the
//! key nor the secret is ever logged.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::record::parse_timestamp;

/// Largest distance between a request's timestamp and now (the push format's 300 s).
pub const MAX_SKEW: chrono::TimeDelta = chrono::TimeDelta::seconds(300);

type HmacSha256 = Hmac<Sha256>;

/// The two push secrets, resolved.
pub struct Credentials {
    key_digest: [u8; 32],
    secret: SecretString,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials { .. }")
    }
}

impl Credentials {
    /// Credentials for `api_key` and the HMAC `secret`.
    pub fn new(api_key: &SecretString, secret: SecretString) -> Self {
        Self {
            key_digest: Sha256::digest(api_key.expose_secret().as_bytes()).into(),
            secret,
        }
    }

    /// Whether `given` (the `X-API-Key` header) is the key, in constant time.
    pub fn key_matches(&self, given: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(given).into();
        digest.ct_eq(&self.key_digest).into()
    }

    /// Whether `signature_hex` is `hex(HMAC-SHA256(secret, timestamp + nonce + body))`.
    pub fn signature_matches(
        &self,
        signature_hex: &[u8],
        timestamp: &str,
        nonce: &str,
        body: &[u8],
    ) -> bool {
        let Ok(signature) = hex::decode(signature_hex.trim_ascii()) else {
            return false;
        };
        let Ok(mut mac) = HmacSha256::new_from_slice(self.secret.expose_secret().as_bytes()) else {
            return false;
        };
        mac.update(timestamp.as_bytes());
        mac.update(nonce.as_bytes());
        mac.update(body);
        mac.verify_slice(&signature).is_ok()
    }
}

/// Signs like a relay: `hex(HMAC-SHA256(secret, timestamp + nonce + body))`. For tests, tools
/// and the docs' example.
pub fn sign(secret: &str, timestamp: &str, nonce: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match HmacSha256::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.as_bytes());
    mac.update(nonce.as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Why a timestamp is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// Not a timestamp in an accepted format.
    Unparseable,
    /// More than [`MAX_SKEW`] away from now.
    Stale,
}

/// Checks a request timestamp (naive values are local time in `tz`) against `now`.
///
/// # Errors
/// [`Freshness::Unparseable`] or [`Freshness::Stale`].
pub fn check_fresh(timestamp: &str, tz: Tz, now: DateTime<Utc>) -> Result<(), Freshness> {
    let at = parse_timestamp(timestamp, tz).ok_or(Freshness::Unparseable)?;
    if (now - at).abs() > MAX_SKEW {
        Err(Freshness::Stale)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_signature_must_both_match() {
        let c = Credentials::new(&"k3y".to_owned().into(), "s3cret".to_owned().into());
        assert!(c.key_matches(b"k3y"));
        assert!(!c.key_matches(b"k3y "));
        assert!(!c.key_matches(b""));
        let body = br#"{"data":[]}"#;
        let sig = sign("s3cret", "2026-01-01T12:00:05", "n1", body);
        assert!(c.signature_matches(sig.as_bytes(), "2026-01-01T12:00:05", "n1", body));
        assert!(c.signature_matches(
            sig.to_uppercase().as_bytes(),
            "2026-01-01T12:00:05",
            "n1",
            body
        ));
        assert!(!c.signature_matches(sig.as_bytes(), "2026-01-01T12:00:05", "n2", body));
        assert!(!c.signature_matches(sig.as_bytes(), "2026-01-01T12:00:05", "n1", b"{}"));
        assert!(!c.signature_matches(b"zz", "2026-01-01T12:00:05", "n1", body));
        assert!(!c.signature_matches(&sig.as_bytes()[..10], "2026-01-01T12:00:05", "n1", body));
    }

    #[test]
    fn signature_matches_a_known_vector() {
        // python3 -c 'import hmac,hashlib; print(hmac.new(b"secret",
        //   b"2026-01-01T12:00:05.123456relay-1{}", hashlib.sha256).hexdigest())'
        assert_eq!(
            sign("secret", "2026-01-01T12:00:05.123456", "relay-1", b"{}"),
            "788904459d6382895a2996fda5f83cf79d7e486ae887583b3f7e44e54f1b37ae"
        );
    }

    #[test]
    fn freshness_window_is_300_seconds_and_naive_times_are_local() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T04:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let sh = chrono_tz::Asia::Shanghai;
        assert_eq!(check_fresh("2026-01-01T12:00:00", sh, now), Ok(()));
        assert_eq!(check_fresh("2026-01-01T12:04:59.9", sh, now), Ok(()));
        assert_eq!(
            check_fresh("2026-01-01T12:05:01", sh, now),
            Err(Freshness::Stale)
        );
        assert_eq!(
            check_fresh("2026-01-01T11:54:59", sh, now),
            Err(Freshness::Stale)
        );
        assert_eq!(
            check_fresh("2026-01-01T12:00:00", chrono_tz::UTC, now),
            Err(Freshness::Stale)
        );
        assert_eq!(check_fresh("2026-01-01T04:00:00Z", sh, now), Ok(()));
        assert_eq!(
            check_fresh("yesterday", sh, now),
            Err(Freshness::Unparseable)
        );
    }
}
