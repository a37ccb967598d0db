//! Ed25519 keys: a named signing key, the public key set verification trusts, and their JSON
//! forms (the key file a worker reads, the `GET /v1/keys` document).
//!
//! Verification only ever uses a [`KeySet`] built from known keys (the registry, the API's key
//! document or a pinned file), never a key carried by the thing being verified.

use crate::values::KeyId;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ed25519_dalek::{Signature as DalekSignature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The only signature algorithm, spelled as receipts spell it.
pub const ALG_ED25519: &str = "Ed25519";
/// A key set holds at most this many keys (every provider's keys plus the marketplace's).
pub const KEY_SET_KEYS_MAX: usize = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key {0} is not base64 of 32 bytes")]
    Encoding(String),
    #[error("key {0} is not a valid Ed25519 public key")]
    Invalid(String),
    #[error("key {0} is a weak (small-order) public key")]
    Weak(String),
    #[error("algorithm {0:?} is not supported (only Ed25519)")]
    Algorithm(String),
    #[error("key id {0} names two different keys")]
    Duplicate(String),
    #[error("a key set holds at most {KEY_SET_KEYS_MAX} keys")]
    TooMany,
}

/// A signature as receipts carry it: `{alg, key_id, sig}` with `sig` in standard base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignatureEnvelope {
    pub alg: String,
    pub key_id: KeyId,
    pub sig: String,
}

/// A signing key with its id.
#[derive(Clone)]
pub struct NamedSigningKey {
    pub key_id: KeyId,
    pub key: SigningKey,
}

impl std::fmt::Debug for NamedSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NamedSigningKey({}, secret hidden)", self.key_id)
    }
}

impl NamedSigningKey {
    pub fn from_seed(key_id: KeyId, seed: [u8; 32]) -> Self {
        Self { key_id, key: SigningKey::from_bytes(&seed) }
    }

    /// A fresh key from the operating system's random source.
    pub fn generate(key_id: KeyId) -> Self {
        Self { key_id, key: SigningKey::generate(&mut rand_core::OsRng) }
    }

    pub fn public(&self) -> PublicKeyEntry {
        PublicKeyEntry {
            key_id: self.key_id.clone(),
            alg: ALG_ED25519.into(),
            public_key: BASE64.encode(self.key.verifying_key().as_bytes()),
        }
    }

    pub fn sign(&self, message: &[u8]) -> SignatureEnvelope {
        SignatureEnvelope {
            alg: ALG_ED25519.into(),
            key_id: self.key_id.clone(),
            sig: BASE64.encode(self.key.sign(message).to_bytes()),
        }
    }

    /// The key file: id, algorithm, secret seed and public key, all base64.
    pub fn to_file(&self) -> SigningKeyFile {
        SigningKeyFile {
            key_id: self.key_id.clone(),
            alg: ALG_ED25519.into(),
            secret_key: BASE64.encode(self.key.to_bytes()),
            public_key: self.public().public_key,
        }
    }

    pub fn from_file(file: &SigningKeyFile) -> Result<Self, KeyError> {
        if file.alg != ALG_ED25519 {
            return Err(KeyError::Algorithm(file.alg.clone()));
        }
        let seed = decode_32(&file.secret_key).ok_or_else(|| KeyError::Encoding(file.key_id.to_string()))?;
        let key = Self::from_seed(file.key_id.clone(), seed);
        if key.public().public_key != file.public_key {
            return Err(KeyError::Invalid(file.key_id.to_string()));
        }
        Ok(key)
    }
}

/// A signing key as stored on a provider's machine (never sent to the marketplace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeyFile {
    pub key_id: KeyId,
    pub alg: String,
    pub secret_key: String,
    pub public_key: String,
}

/// A public key as registered and published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PublicKeyEntry {
    pub key_id: KeyId,
    /// `Ed25519`, the one algorithm receipts are signed with.
    #[cfg_attr(feature = "openapi", schema(pattern = "^Ed25519$"))]
    pub alg: String,
    /// The 32-byte public key, base64 (standard alphabet, padded).
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$"))]
    pub public_key: String,
}

impl PublicKeyEntry {
    /// Parses the key, refusing other algorithms, bad encodings and weak keys.
    ///
    /// Weak means more than dalek's `is_weak` (small order): a key with a torsion component is
    /// refused too, and so is a non-canonical encoding. With such keys a single `verify_strict`
    /// and the batch equation (random coefficients, cofactorless) can disagree on the same
    /// signature; with prime-order keys they cannot (see `receipt::verify_batch`).
    pub fn verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        if self.alg != ALG_ED25519 {
            return Err(KeyError::Algorithm(self.alg.clone()));
        }
        let bytes = decode_32(&self.public_key).ok_or_else(|| KeyError::Encoding(self.key_id.to_string()))?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::Invalid(self.key_id.to_string()))?;
        if key.to_edwards().compress().to_bytes() != bytes {
            return Err(KeyError::Invalid(self.key_id.to_string()));
        }
        if !is_prime_order(&key) {
            return Err(KeyError::Weak(self.key_id.to_string()));
        }
        Ok(key)
    }
}

/// Whether a point (a key, or a signature's R read as one) lies in the prime-order subgroup and
/// is not the identity: neither small order nor with a torsion component.
pub(crate) fn is_prime_order(point: &VerifyingKey) -> bool {
    let point = point.to_edwards();
    !point.is_small_order() && point.is_torsion_free()
}

/// The `GET /v1/keys` document and the pinned key file: `{"keys": [...]}`, and which of them is
/// the marketplace's own (countersignatures verify only against that one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KeySetDocument {
    pub keys: Vec<PublicKeyEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marketplace_key_id: Option<KeyId>,
}

impl KeySetDocument {
    pub fn of(keys: Vec<PublicKeyEntry>) -> Self {
        Self { keys, marketplace_key_id: None }
    }

    /// The marketplace's key alone, if the document names it.
    pub fn marketplace_keys(&self) -> Result<Option<KeySet>, KeyError> {
        let Some(id) = &self.marketplace_key_id else { return Ok(None) };
        let mut set = KeySet::new();
        for entry in self.keys.iter().filter(|k| &k.key_id == id) {
            set.insert(entry)?;
        }
        Ok(Some(set))
    }

    /// Every key but the marketplace's: the ones provider signatures verify against.
    pub fn provider_keys(&self) -> Result<KeySet, KeyError> {
        let mut set = KeySet::new();
        for entry in self.keys.iter().filter(|k| Some(&k.key_id) != self.marketplace_key_id.as_ref()) {
            set.insert(entry)?;
        }
        Ok(set)
    }
}

/// The keys verification trusts, by id.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: HashMap<KeyId, VerifyingKey>,
}

impl KeySet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_document(document: &KeySetDocument) -> Result<Self, KeyError> {
        let mut set = Self::new();
        for entry in &document.keys {
            set.insert(entry)?;
        }
        Ok(set)
    }

    /// Adds a key; the same id with the same key is a no-op, with another key an error.
    pub fn insert(&mut self, entry: &PublicKeyEntry) -> Result<(), KeyError> {
        let key = entry.verifying_key()?;
        match self.keys.get(&entry.key_id) {
            Some(existing) if existing == &key => Ok(()),
            Some(_) => Err(KeyError::Duplicate(entry.key_id.to_string())),
            None if self.keys.len() >= KEY_SET_KEYS_MAX => Err(KeyError::TooMany),
            None => {
                self.keys.insert(entry.key_id.clone(), key);
                Ok(())
            }
        }
    }

    pub fn get(&self, key_id: &KeyId) -> Option<&VerifyingKey> {
        self.keys.get(key_id)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

pub(crate) fn decode_32(text: &str) -> Option<[u8; 32]> {
    // 32 bytes are 44 base64 characters; refuse anything longer before decoding.
    if text.len() > 44 {
        return None;
    }
    BASE64.decode(text).ok()?.try_into().ok()
}

pub(crate) fn decode_signature(text: &str) -> Option<DalekSignature> {
    // 64 bytes are 88 base64 characters.
    if text.len() > 88 {
        return None;
    }
    let bytes: [u8; 64] = BASE64.decode(text).ok()?.try_into().ok()?;
    Some(DalekSignature::from_bytes(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_id(s: &str) -> KeyId {
        KeyId::parse(s).unwrap()
    }

    #[test]
    fn key_files_round_trip_and_must_agree_with_themselves() {
        let key = NamedSigningKey::from_seed(key_id("k1"), [7; 32]);
        let file = key.to_file();
        let back = NamedSigningKey::from_file(&file).unwrap();
        assert_eq!(back.public(), key.public());
        let mut wrong = file.clone();
        wrong.public_key = NamedSigningKey::from_seed(key_id("k1"), [8; 32]).public().public_key;
        assert_eq!(NamedSigningKey::from_file(&wrong).unwrap_err(), KeyError::Invalid("k1".into()));
        let mut alg = file;
        alg.alg = "RS256".into();
        assert!(matches!(NamedSigningKey::from_file(&alg), Err(KeyError::Algorithm(_))));
    }

    #[test]
    fn key_sets_refuse_bad_weak_and_conflicting_keys() {
        let k1 = NamedSigningKey::from_seed(key_id("k1"), [1; 32]).public();
        let mut set = KeySet::new();
        set.insert(&k1).unwrap();
        set.insert(&k1).unwrap();
        assert_eq!(set.len(), 1);
        let conflicting = PublicKeyEntry { public_key: NamedSigningKey::from_seed(key_id("k1"), [2; 32]).public().public_key, ..k1.clone() };
        assert_eq!(set.insert(&conflicting), Err(KeyError::Duplicate("k1".into())));
        let garbage = PublicKeyEntry { public_key: "not base64!".into(), ..k1.clone() };
        assert!(matches!(set.insert(&garbage), Err(KeyError::Encoding(_))));
        // The identity point (y = 1) has small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = PublicKeyEntry { key_id: key_id("weak"), public_key: BASE64.encode(identity), ..k1 };
        assert_eq!(set.insert(&weak), Err(KeyError::Weak("weak".into())));
    }

    /// A key with a torsion component passes dalek's `is_weak` but lets a single
    /// `verify_strict` and the batch equation disagree; it is refused, as small-order keys are.
    #[test]
    fn keys_of_small_order_or_with_a_torsion_component_are_refused() {
        use curve25519_dalek::constants::EIGHT_TORSION;
        let honest = NamedSigningKey::from_seed(key_id("k1"), [1; 32]).public();
        assert!(honest.verifying_key().is_ok());
        let point = honest.verifying_key().unwrap().to_edwards();
        for (name, candidate) in [("mixed", point + EIGHT_TORSION[1]), ("mixed4", point + EIGHT_TORSION[2]), ("order8", EIGHT_TORSION[1]), ("order2", EIGHT_TORSION[4])] {
            let entry = PublicKeyEntry { key_id: key_id(name), public_key: BASE64.encode(candidate.compress().to_bytes()), ..honest.clone() };
            assert!(VerifyingKey::from_bytes(&candidate.compress().to_bytes()).is_ok(), "{name} decodes as a point");
            assert_eq!(entry.verifying_key(), Err(KeyError::Weak(name.into())), "{name}");
        }
    }
}
