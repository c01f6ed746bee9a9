//! Raw key values: generation, parsing, Argon2id hashing. A raw value lives only in [`RawKey`],
//! whose Debug output is redacted and whose memory is never logged.

use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::fmt;

/// Every key value starts with this, so secret scanners can find leaked keys.
pub const KEY_PREFIX: &str = "kw_";
/// Bytes of CSPRNG output in the secret part (256 bits).
const SECRET_BYTES: usize = 32;
/// Bytes of the public key id (also the key's record id).
const KEY_ID_BYTES: usize = 8;

/// A raw key value: `kw_<key id, 16 hex>_<secret, 43 base64url>`, held as a `SecretString`.
#[derive(Clone)]
pub struct RawKey(secrecy::SecretString);

impl PartialEq for RawKey {
    fn eq(&self, other: &RawKey) -> bool {
        subtle::ConstantTimeEq::ct_eq(self.expose().as_bytes(), other.expose().as_bytes()).into()
    }
}

impl fmt::Debug for RawKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawKey({}…redacted)", self.key_id().unwrap_or("?"))
    }
}

impl RawKey {
    /// A fresh value for the key `key_id`.
    pub fn generate(key_id: &str) -> RawKey {
        let mut secret = [0u8; SECRET_BYTES];
        OsRng.fill_bytes(&mut secret);
        RawKey(format!("{KEY_PREFIX}{key_id}_{}", URL_SAFE_NO_PAD.encode(secret)).into())
    }

    /// Wraps a presented value; see [`RawKey::key_id`] for whether it is well-formed.
    pub fn from_presented(value: &str) -> RawKey {
        RawKey(value.to_owned().into())
    }

    /// The public key id inside the value, if the value has the keyward shape.
    pub fn key_id(&self) -> Option<&str> {
        key_id_of(self.expose())
    }

    /// The value itself: only for the one response that shows it, and for sending it.
    pub fn expose(&self) -> &str {
        secrecy::ExposeSecret::expose_secret(&self.0)
    }

    /// Argon2id PHC string of this value (default parameters: m=19 MiB, t=2, p=1).
    pub fn hash(&self) -> String {
        let salt = SaltString::generate(&mut OsRng);
        let params = Params::default();
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        let mut salt_bytes = [0u8; 64];
        let hashed = salt
            .decode_b64(&mut salt_bytes)
            .ok()
            .and_then(|raw_salt| argon2_into(self.expose(), raw_salt, &params, &mut out))
            .and_then(|()| {
                Some(PasswordHash {
                    algorithm: Algorithm::Argon2id.ident(),
                    version: Some(Version::V0x13.into()),
                    params: (&params).try_into().ok()?,
                    salt: Some(salt.as_salt()),
                    hash: Some(Output::new(&out).ok()?),
                })
            });
        // Default parameters and a generated salt cannot fail.
        hashed.map(|h| h.to_string()).unwrap_or_default()
    }

    /// Argon2id verification against a stored PHC string, comparing in constant time.
    pub fn verify(&self, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        let (Ok(params), Some(salt), Some(expected)) =
            (Params::try_from(&parsed), parsed.salt, parsed.hash)
        else {
            return false;
        };
        if Algorithm::try_from(parsed.algorithm) != Ok(Algorithm::Argon2id) {
            return false;
        }
        let mut salt_bytes = [0u8; 64];
        let mut out = vec![0u8; expected.len()];
        salt.decode_b64(&mut salt_bytes)
            .ok()
            .and_then(|raw_salt| argon2_into(self.expose(), raw_salt, &params, &mut out))
            .and_then(|()| Output::new(&out).ok())
            // `Output`'s equality is constant-time.
            .is_some_and(|got| got == expected)
    }

    /// What the verification cache compares after one Argon2id check ([`cache_digest`]).
    pub fn digest(&self) -> [u8; 32] {
        cache_digest(self.expose())
    }
}

thread_local! {
    /// Argon2id's working memory (19 MiB with the default parameters), kept by each thread that
    /// hashes (the hashing pool's) instead of being allocated and freed for every check.
    static ARGON2_MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Argon2id (version 0x13) of `password` into `out`, with this thread's reused memory.
fn argon2_into(password: &str, salt: &[u8], params: &Params, out: &mut [u8]) -> Option<()> {
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    ARGON2_MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        if memory.len() < params.block_count() {
            memory.resize(params.block_count(), Block::default());
        }
        argon
            .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut memory[..])
            .ok()
    })
}

pub fn digest(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

/// The verification cache's digest of a presented value: SHA-256 of its secret part (43
/// characters, one SHA-256 block, half the work of the whole value's two). The cache is per key
/// id, and the Argon2id check that fills it covers the whole value, so the id part adds
/// nothing here. A value not in the issued form (never cached) is digested whole.
pub fn cache_digest(value: &str) -> [u8; 32] {
    digest(key_parts(value).map_or(value, |(_, secret)| secret))
}

/// The key id of a presented value without copying it: the hot path's first step.
pub fn key_id_of(value: &str) -> Option<&str> {
    key_parts(value).map(|(id, _)| id)
}

/// A presented value's key id and secret, if it is in the form this service issues
/// (`KEY_PREFIX`, the id in lowercase hex, `_`, a 43-character secret).
pub fn key_parts(value: &str) -> Option<(&str, &str)> {
    let rest = value.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == KEY_ID_BYTES * 2
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        && secret.len() == 43)
        .then_some((id, secret))
}

/// A new random key id (public; 64 bits, lowercase hex).
pub fn new_key_id() -> String {
    let mut b = [0u8; KEY_ID_BYTES];
    OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A random token of `bytes` bytes, base64url.
pub fn random_token(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    OsRng.fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

pub use crate::model::fingerprint;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_entropy_and_redaction() {
        let id = new_key_id();
        let k = RawKey::generate(&id);
        assert_eq!(k.key_id(), Some(id.as_str()));
        assert!(k.expose().starts_with("kw_"));
        let secret = &k.expose()[format!("kw_{id}_").len()..];
        assert_eq!(URL_SAFE_NO_PAD.decode(secret).unwrap().len(), 32);
        assert!(!format!("{k:?}").contains(secret));
        assert_ne!(RawKey::generate(&id), k);
    }

    #[test]
    fn hash_is_argon2id_and_verifies() {
        let k = RawKey::generate(&new_key_id());
        let phc = k.hash();
        assert!(phc.starts_with("$argon2id$"));
        assert!(!phc.contains(k.expose()));
        assert!(k.verify(&phc));
        assert!(!RawKey::generate(&new_key_id()).verify(&phc));
    }

    #[test]
    fn hashes_agree_with_the_argon2_crate_both_ways() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let k = RawKey::generate(&new_key_id());
        // Stored by earlier versions (the crate's own hasher), verified here.
        let theirs = Argon2::default()
            .hash_password(k.expose().as_bytes(), &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        assert!(k.verify(&theirs));
        // Hashed here, verified by the crate.
        let ours = k.hash();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password(k.expose().as_bytes(), &parsed)
            .is_ok());
        assert!(Argon2::default()
            .verify_password(b"other", &parsed)
            .is_err());
        assert!(!k.verify(
            "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA"
        ));
        assert!(!k.verify("not a phc string"));
    }

    #[test]
    fn malformed_values_have_no_key_id() {
        for v in [
            "",
            "kw_",
            "kw_zz_abc",
            "Bearer x",
            "kw_0123456789abcdef_short",
        ] {
            assert_eq!(key_id_of(v), None, "{v}");
        }
    }
}
