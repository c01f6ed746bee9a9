//! The key index and the verification hot path.
//!
//! Per request: parse the public key id out of the value (an unknown or malformed id is rejected
//! without hashing), then compare a SHA-256 of the value in constant time against the digests that
//! already passed Argon2id for this entry. Only a value never seen before costs one Argon2id
//! verification, run on the blocking pool behind a semaphore (one check per core, a bounded
//! queue) so a flood of guesses cannot take every core. Concurrent first requests with the same
//! value wait for one check; different values never wait for each other, so a flood of wrong
//! secrets for a key does not hold up its right one. The caller's `before_hashing` hook (a rate
//! limit per client and key) runs before any hashing. Revoke and regenerate replace or remove
//! the entry under the index's write lock, which drops its cache with it: no stale value
//! survives them. An edit replaces the record and keeps the verified values (rights come from
//! the record at every request). A check whose entry was replaced while Argon2id ran is judged
//! by the entry as it is now.

use super::hashing::{Busy, HashPool};
use super::keys::KeyRecord;
use super::secret::{digest, key_id_of, key_parts, RawKey};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// A stored Argon2id hash and, for a value replaced with a grace period, when it stops working.
#[derive(Clone)]
pub struct StoredHash {
    pub phc: String,
    /// Unix milliseconds; `None` for the current value.
    pub valid_until: Option<i64>,
}

/// One key as the verifier sees it.
pub struct KeyEntry {
    pub record: KeyRecord,
    /// The record as the management API shows it, rendered once: a listing of thousands of
    /// keys (every drift interval, every CLI run) copies these instead of building each anew.
    pub json: Box<str>,
    expires_at: i64,
    hashes: Vec<StoredHash>,
    /// Digests of values that passed Argon2id, with the validity of the hash they matched.
    verified: RwLock<Vec<([u8; 32], Option<i64>)>>,
    /// One Argon2id check at a time per presented value: concurrent first requests with the
    /// same new value wait for the first one and then hit the cache, instead of each paying
    /// Argon2id; other values go ahead.
    verifying: parking_lot::Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyEntry {
    pub fn new(record: KeyRecord, hashes: Vec<StoredHash>) -> KeyEntry {
        let expires_at = record.expires_at().as_millisecond();
        KeyEntry {
            json: record.to_json().to_string().into(),
            record,
            expires_at,
            hashes,
            verified: RwLock::new(Vec::new()),
            verifying: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    pub fn hashes(&self) -> &[StoredHash] {
        &self.hashes
    }

    fn cached(&self, d: &[u8; 32], now: i64) -> bool {
        self.verified
            .read()
            .iter()
            .any(|(known, until)| same_digest(known, d) && until.is_none_or(|u| now < u))
    }
}

/// Whether two digests are equal, in constant time: the four 64-bit words are XORed and ORed
/// together (no early exit), and only that one word is compared, with `subtle` (byte-wise
/// `ct_eq` over 32 bytes was a fifth of a cached check).
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let word = |d: &[u8; 32], i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&d[i * 8..i * 8 + 8]);
        u64::from_ne_bytes(w)
    };
    let diff = (0..4).fold(0u64, |acc, i| acc | (word(a, i) ^ word(b, i)));
    bool::from(diff.ct_eq(&0))
}

/// Why a presented value was not accepted. Every variant answers 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the API key is not in a form this service issues")]
    Malformed,
    #[error("the API key is unknown or revoked")]
    Unknown,
    #[error("the API key is unknown or revoked")]
    Mismatch,
    #[error("the API key has expired")]
    Expired,
    /// Too many values needing Argon2id from this client for this key (429).
    #[error("too many unverified attempts for this key; retry later")]
    Throttled(std::time::Duration),
    /// The Argon2id queue is full (429).
    #[error("verification is busy; retry later")]
    Busy,
}

/// The outcome of the cache-only step.
pub enum CacheCheck {
    Hit(Arc<KeyEntry>),
    /// The id is known but this value has not been verified yet: Argon2id must decide.
    Miss(Arc<KeyEntry>),
    Rejected(Rejection),
}

pub struct Verifier {
    /// By key id. Ids are random and chosen by the service, never by a caller, so a fast
    /// (per-process seeded) hash is safe here: a caller can only look up, not fill buckets.
    index: RwLock<HashMap<String, Arc<KeyEntry>, foldhash::fast::RandomState>>,
    /// Where every Argon2id computation runs (checks here, hashes for the service).
    pool: HashPool,
    /// Argon2id verifications run so far: what the cache is there to keep low.
    argon_checks: AtomicU64,
    /// How long a check takes here lately, queue included (nanoseconds; 0 until one ran): what
    /// an unknown key id waits, so that it cannot be told from a known one by the time.
    typical_check_ns: AtomicU64,
}

/// The key id of the value an unknown id's first pacing check runs against.
const PACING_ID: &str = "0000000000000000";

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier {
    pub fn new() -> Verifier {
        Verifier {
            index: RwLock::new(HashMap::default()),
            pool: HashPool::per_core(),
            argon_checks: AtomicU64::new(0),
            typical_check_ns: AtomicU64::new(0),
        }
    }

    /// Adds or replaces a key; a replaced entry's cache goes with it.
    pub fn upsert(&self, entry: KeyEntry) {
        self.index
            .write()
            .insert(entry.record.id.clone(), Arc::new(entry));
    }

    /// Replaces a key's record, keeping its values: the values already verified stay verified
    /// (an edit changes what a key may do, never which values are its own), so a key in use
    /// costs no Argon2id check after each edit.
    pub fn replace_record(&self, current: &KeyEntry, record: KeyRecord) {
        let next = KeyEntry::new(record, current.hashes.clone());
        *next.verified.write() = current.verified.read().clone();
        self.upsert(next);
    }

    pub fn remove(&self, id: &str) -> Option<Arc<KeyEntry>> {
        self.index.write().remove(id)
    }

    pub fn get(&self, id: &str) -> Option<Arc<KeyEntry>> {
        self.index.read().get(id).cloned()
    }

    /// The Argon2id PHC string of a new value, computed on the hashing pool (waits for room).
    pub fn hash(&self, raw: &RawKey) -> Result<String, Busy> {
        let raw = raw.clone();
        self.pool.run_blocking(move || raw.hash())
    }

    pub fn argon2_checks(&self) -> u64 {
        self.argon_checks.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.index.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every key record, ordered by creation.
    /// Every key, oldest first.
    pub fn entries(&self) -> Vec<Arc<KeyEntry>> {
        let mut v: Vec<Arc<KeyEntry>> = self.index.read().values().cloned().collect();
        v.sort_by(|a, b| {
            (a.record.created_at, &a.record.id).cmp(&(b.record.created_at, &b.record.id))
        });
        v
    }

    /// The personal key of a member, if any.
    /// Whether some key already has this name (without copying records).
    pub fn name_taken(&self, name: &str) -> bool {
        self.index
            .read()
            .values()
            .any(|e| e.record.spec.name == name)
    }

    pub fn personal_key_of(&self, member: &str) -> Option<String> {
        self.index
            .read()
            .values()
            .find(|e| e.record.spec.owner.as_deref() == Some(member))
            .map(|e| e.record.id.clone())
    }

    /// The cache-only step: no hashing, no allocation beyond the SHA-256. `now` is in Unix
    /// milliseconds. A key's expiry is told only to a value already proven to be its own.
    pub fn check_cached(&self, presented: &str, now: i64) -> CacheCheck {
        let Some((id, secret)) = key_parts(presented) else {
            return CacheCheck::Rejected(Rejection::Malformed);
        };
        let Some(entry) = self.index.read().get(id).cloned() else {
            return CacheCheck::Rejected(Rejection::Unknown);
        };
        // `cache_digest` of the value: its secret part's SHA-256.
        if entry.cached(&digest(secret), now) {
            if entry.expires_at <= now {
                return CacheCheck::Rejected(Rejection::Expired);
            }
            CacheCheck::Hit(entry)
        } else {
            CacheCheck::Miss(entry)
        }
    }

    /// Folds one check's duration into the typical one.
    fn record_check(&self, took: std::time::Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let old = self.typical_check_ns.load(Ordering::Relaxed);
        let next = if old == 0 { ns } else { old - old / 8 + ns / 8 };
        self.typical_check_ns.store(next.max(1), Ordering::Relaxed);
    }

    /// Takes as long as a check of a wrong secret would, without the work once a check has
    /// been timed: an unknown key id answers like a known one with a wrong secret.
    async fn as_long_as_a_check(&self) {
        let ns = self.typical_check_ns.load(Ordering::Relaxed);
        if ns > 0 {
            tokio::time::sleep(std::time::Duration::from_nanos(ns)).await;
            return;
        }
        let started = std::time::Instant::now();
        let _ = self
            .pool
            .try_run(|| {
                static PACING: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                let phc = PACING.get_or_init(|| RawKey::generate(PACING_ID).hash());
                RawKey::generate(PACING_ID).verify(phc)
            })
            .await;
        self.record_check(started.elapsed());
    }

    /// Full verification: the cache, then at most one Argon2id check per value. `before_hashing`
    /// gets the key id and may refuse (a rate limit) before any hashing is spent.
    pub async fn verify(
        &self,
        presented: &str,
        before_hashing: impl FnOnce(&str) -> Result<(), Rejection>,
    ) -> Result<Arc<KeyEntry>, Rejection> {
        let now = jiff::Timestamp::now().as_millisecond();
        let entry = match self.check_cached(presented, now) {
            CacheCheck::Hit(e) => return Ok(e),
            // A well-formed id no key has: answered as a known id with a wrong secret is, after
            // the same rate limit and in about the same time.
            CacheCheck::Rejected(Rejection::Unknown) => {
                before_hashing(key_id_of(presented).unwrap_or_default())?;
                self.as_long_as_a_check().await;
                return Err(Rejection::Unknown);
            }
            CacheCheck::Rejected(r) => return Err(r),
            CacheCheck::Miss(e) => e,
        };
        let raw = RawKey::from_presented(presented);
        let d = raw.digest();
        let flight = entry.verifying.lock().entry(d).or_default().clone();
        let _single_flight = flight.lock().await;
        let result = self.verify_uncached(&entry, raw, now, before_hashing).await;
        let mut flights = entry.verifying.lock();
        if flights.get(&d).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            flights.remove(&d);
        }
        result
    }

    async fn verify_uncached(
        &self,
        entry: &Arc<KeyEntry>,
        raw: RawKey,
        now: i64,
        before_hashing: impl FnOnce(&str) -> Result<(), Rejection>,
    ) -> Result<Arc<KeyEntry>, Rejection> {
        let d = raw.digest();
        if entry.cached(&d, now) {
            return match entry.expires_at <= now {
                true => Err(Rejection::Expired),
                false => Ok(entry.clone()),
            };
        }
        before_hashing(&entry.record.id)?;
        let candidates: Vec<StoredHash> = entry
            .hashes
            .iter()
            .filter(|h| h.valid_until.is_none_or(|u| now < u))
            .cloned()
            .collect();
        self.argon_checks.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let matched = self
            .pool
            .try_run(move || {
                candidates
                    .into_iter()
                    .find(|h| raw.verify(&h.phc))
                    .map(|h| h.phc)
            })
            .await
            .map_err(|_| Rejection::Busy)?;
        self.record_check(started.elapsed());
        let Some(phc) = matched else {
            return Err(Rejection::Mismatch);
        };
        // The entry may have been replaced while Argon2id ran: a revoke or a regenerate must
        // win, but an edit (its hashes are the same) must not turn a valid key away. So the
        // value is judged by the entry as it is now: it is valid if that entry still holds
        // the hash it matched, for as long as that entry says.
        let index = self.index.read();
        let current = index
            .get(&entry.record.id)
            .ok_or(Rejection::Unknown)?
            .clone();
        drop(index);
        let now = jiff::Timestamp::now().as_millisecond();
        if current.expires_at <= now {
            return Err(Rejection::Expired);
        }
        let valid_until = current
            .hashes
            .iter()
            .find(|h| h.phc == phc && h.valid_until.is_none_or(|u| now < u))
            .map(|h| h.valid_until)
            .ok_or(Rejection::Unknown)?;
        let mut cache = current.verified.write();
        if !cache.iter().any(|(k, _)| *k == d) {
            cache.push((d, valid_until));
        }
        drop(cache);
        Ok(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_equal_only_when_every_byte_is() {
        let a = [7u8; 32];
        assert!(same_digest(&a, &a.clone()));
        for i in 0..32 {
            for bit in [1u8, 0x80] {
                let mut b = a;
                b[i] ^= bit;
                assert!(!same_digest(&a, &b), "byte {i}, bit {bit:#x}");
            }
        }
    }

    #[test]
    fn the_cache_digest_is_of_the_secret_part_and_of_anything_else_whole() {
        let raw = RawKey::generate("0123456789abcdef");
        let (_, secret) = crate::cms::secret::key_parts(raw.expose()).expect("issued form");
        assert_eq!(raw.digest(), digest(secret));
        assert_eq!(
            crate::cms::secret::cache_digest("not a key"),
            digest("not a key")
        );
    }
}
