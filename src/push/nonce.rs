//! The replay guard: nonces seen in the last [`NONCE_TTL`], in a cache with a hard size cap.
//!
//! Only requests whose signature verified reach this cache, so an outsider cannot fill it. At the
//! cap the oldest nonce is forgotten first; a replay of a forgotten nonce is still inside the
//! ±300 s freshness window at worst, and the idempotent store absorbs the duplicate batch.
//!
//! A nonce is used up only by a request that was taken: one refused after the nonce was
//! recorded (503 `not_durable`: neither queue nor spool took the batch in time) is forgotten
//! again ([`NonceCache::forget`]), so a relay may resend the very same request.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a nonce is remembered (the push format's 600 s).
pub const NONCE_TTL: Duration = Duration::from_secs(600);

/// Bounded set of recently seen nonces.
#[derive(Debug)]
pub struct NonceCache {
    ttl: Duration,
    cap: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    seen: HashMap<String, Instant>,
    /// Insertion order, for expiry and eviction; entries always match `seen`.
    order: VecDeque<(Instant, String)>,
    /// Whether the cap has been hit since start (logged once).
    overflowed: bool,
}

impl NonceCache {
    /// A cache remembering up to `cap` nonces for `ttl` each.
    pub fn new(cap: usize, ttl: Duration) -> Self {
        Self {
            ttl,
            cap: cap.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Records `nonce` as seen at `now`; false when it was already seen within the TTL (a replay).
    pub fn check_and_insert(&self, nonce: &str, now: Instant) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((at, _)) = inner.order.front() {
            if now.saturating_duration_since(*at) < self.ttl {
                break;
            }
            if let Some((_, old)) = inner.order.pop_front() {
                inner.seen.remove(&old);
            }
        }
        if inner.seen.contains_key(nonce) {
            return false;
        }
        if inner.seen.len() >= self.cap {
            if let Some((_, old)) = inner.order.pop_front() {
                inner.seen.remove(&old);
            }
            if !inner.overflowed {
                inner.overflowed = true;
                tracing::warn!(
                    cap = self.cap,
                    "Push nonce cache is full; forgetting the oldest nonces early. Raise push.nonce_cache_size if relays push this often."
                );
            }
        }
        inner.seen.insert(nonce.to_owned(), now);
        inner.order.push_back((now, nonce.to_owned()));
        true
    }

    /// Forgets `nonce` if it is still the one [`Self::check_and_insert`] recorded at `at`: the
    /// request that used it was not taken (503 `not_durable`), so the relay may send the very
    /// same request again. A later request that reused the nonce after it expired or was
    /// evicted is left alone.
    pub fn forget(&self, nonce: &str, at: Instant) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.seen.get(nonce) != Some(&at) {
            return;
        }
        inner.seen.remove(nonce);
        // Just inserted, so it is at the back or close to it.
        if let Some(i) = inner
            .order
            .iter()
            .rposition(|(t, n)| *t == at && n == nonce)
        {
            inner.order.remove(i);
        }
    }

    /// Nonces currently remembered.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .seen
            .len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_refused_within_the_ttl_and_accepted_after_it() {
        let c = NonceCache::new(10, Duration::from_secs(600));
        let t0 = Instant::now();
        assert!(c.check_and_insert("a", t0));
        assert!(!c.check_and_insert("a", t0 + Duration::from_secs(599)));
        assert!(c.check_and_insert("b", t0 + Duration::from_secs(1)));
        assert!(c.check_and_insert("a", t0 + Duration::from_secs(600)));
        // "b" expired at 601 s too; only the renewed "a" remains.
        assert!(c.check_and_insert("c", t0 + Duration::from_secs(601)));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn a_forgotten_nonce_is_accepted_again_and_only_its_own_entry_is_forgotten() {
        let c = NonceCache::new(10, Duration::from_secs(600));
        let t0 = Instant::now();
        assert!(c.check_and_insert("a", t0));
        c.forget("a", t0);
        assert!(c.is_empty());
        let t1 = t0 + Duration::from_secs(1);
        assert!(c.check_and_insert("a", t1));
        // A stale forget (the entry of t0 is gone) leaves the newer entry alone.
        c.forget("a", t0);
        assert!(!c.check_and_insert("a", t1 + Duration::from_secs(1)));
        assert_eq!(c.len(), 1);
        // Expiry still works after a forget: the order queue matches the set.
        assert!(c.check_and_insert("b", t1 + Duration::from_secs(600)));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn the_cache_never_grows_past_its_cap() {
        let c = NonceCache::new(3, Duration::from_secs(600));
        let t0 = Instant::now();
        for i in 0..100 {
            assert!(c.check_and_insert(&format!("n{i}"), t0));
            assert!(c.len() <= 3);
        }
        // The newest are still refused; the oldest were forgotten.
        assert!(!c.check_and_insert("n99", t0));
        assert!(c.check_and_insert("n0", t0));
    }
}
