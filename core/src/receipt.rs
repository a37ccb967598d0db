//! Usage receipts: the seed's fields plus what verification and settlement need, canonical
//! bytes by RFC 8785, Ed25519 signatures by the provider and a countersignature by the
//! marketplace, verified only against a supplied [`KeySet`].
//!
//! The signed bytes are the JCS form of the receipt without its `signature` and
//! `countersignature` members, so both signatures cover the same content and either can be
//! checked on its own. Nothing is added to a receipt after signing except the countersignature.

use crate::jcs::{self, JcsError};
use crate::money::{Amount, GpuMillis, MoneyError, Rate};
use crate::signing::{decode_signature, KeySet, NamedSigningKey, SignatureEnvelope, ALG_ED25519};
use crate::values::{Address, JobId, KeyId, ListingId, ModelName, ReceiptId};
use ed25519_dalek::{Signature as DalekSignature, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The receipt format's version this build writes; a verifier refuses versions it does not
/// know. Version 2 added `cpu_seconds` units and the token counts of text generation.
pub const RECEIPT_VERSION: u32 = 2;
/// The oldest version this build still verifies: version 1 receipts (GPU-seconds, no token
/// counts) verify as they were signed.
pub const RECEIPT_VERSION_MIN: u32 = 1;
/// Receipts verified in one batch call, at most.
pub const VERIFY_BATCH_MAX: usize = 4_096;
/// A job's attempts are numbered from 1 up to this.
pub const ATTEMPT_MAX: u32 = 100;
/// Timestamps are unix seconds between 2020-01-01 and 2200-01-01.
pub const TIMESTAMP_S_MIN: i64 = 1_577_836_800;
pub const TIMESTAMP_S_MAX: i64 = 7_258_118_400;

/// What `JobOutput::backend` says of a model served by the provider's own inference server.
pub const UPSTREAM_BACKEND: &str = "upstream";

/// What a receipt's units measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum UnitType {
    /// GPU time, timed with CUDA events on the device.
    GpuSeconds,
    /// CPU time of the threads that ran the job, on a machine without a GPU (version 2).
    CpuSeconds,
    /// Elapsed time of the request to the provider's own OpenAI-compatible inference server (an
    /// upstream model, version 2): the worker cannot see inside that server, so it meters the
    /// wall-clock time the server took to answer, and says so.
    WallSeconds,
}

/// What a body's canonical form usually needs (about 400 bytes).
const CANONICAL_BYTES_HINT: usize = 512;
/// A thread's reused canonicalization buffer is given back past this size.
const CANONICAL_BUFFER_BYTES_MAX: usize = 4 * 1024;

thread_local! {
    static CANONICAL_BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(CANONICAL_BYTES_HINT));
}

/// A body's members in RFC 8785 order (by UTF-16 code units, here plain byte order), borrowed,
/// with the body's own serde attributes: serialized compactly, it is the canonical form.
#[derive(Serialize)]
struct CanonicalBody<'a> {
    attempt: u32,
    client: &'a Address,
    completed_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens: Option<u32>,
    gpu_id: &'a ListingId,
    job_id: &'a JobId,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a ModelName>,
    price: &'a Amount,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens: Option<u32>,
    provider: &'a Address,
    receipt_id: &'a ReceiptId,
    started_at: i64,
    unit_price: &'a Rate,
    unit_type: UnitType,
    units: &'a GpuMillis,
    version: u32,
}

impl<'a> CanonicalBody<'a> {
    fn of(b: &'a ReceiptBody) -> Self {
        // Destructured, so a field added to the body cannot be forgotten here.
        let ReceiptBody { version, receipt_id, job_id, gpu_id, attempt, provider, client, units, unit_type, unit_price, price, model, started_at, completed_at, prompt_tokens, completion_tokens } = b;
        CanonicalBody {
            attempt: *attempt,
            client,
            completed_at: *completed_at,
            completion_tokens: *completion_tokens,
            gpu_id,
            job_id,
            model: model.as_ref(),
            price,
            prompt_tokens: *prompt_tokens,
            provider,
            receipt_id,
            started_at: *started_at,
            unit_price,
            unit_type: *unit_type,
            units,
            version: *version,
        }
    }
}

/// Everything a receipt says, without its signatures: the part that is signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReceiptBody {
    /// The format's version, 1 or 2 (`RECEIPT_VERSION_MIN..=RECEIPT_VERSION`; the document's bound says the same).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 2))]
    pub version: u32,
    pub receipt_id: ReceiptId,
    pub job_id: JobId,
    /// The GPU listing that ran the job.
    pub gpu_id: ListingId,
    /// Which attempt of the job this receipt is for (1-based).
    pub attempt: u32,
    pub provider: Address,
    pub client: Address,
    /// Metered GPU-seconds (millisecond precision), e.g. "2.5".
    pub units: GpuMillis,
    pub unit_type: UnitType,
    /// AITBC per unit (GPU-second), from the job's quote.
    pub unit_price: Rate,
    /// `units x unit_price`, rounded half up to the nano (see `money`).
    pub price: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelName>,
    /// Unix seconds.
    pub started_at: i64,
    pub completed_at: i64,
    /// Tokens the model read, for a text-generation job (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u32>,
    /// Tokens the model wrote, for a text-generation job (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u32>,
}

/// A signed receipt. Parsing refuses members other than the body's and the two signatures, so
/// nothing unsigned can ride along in a receipt that verifies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Map<String, serde_json::Value>")]
pub struct Receipt {
    #[serde(flatten)]
    pub body: ReceiptBody,
    /// The provider's signature, by its registered key.
    pub signature: SignatureEnvelope,
    /// The marketplace's countersignature, added when the API accepts the receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub countersignature: Option<SignatureEnvelope>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("receipt version {0} is not supported (this build knows {RECEIPT_VERSION_MIN}..={RECEIPT_VERSION})")]
    Version(u32),
    #[error("a version {version} receipt cannot carry {what}")]
    NotInVersion { version: u32, what: &'static str },
    #[error("token counts come in pairs: prompt_tokens and completion_tokens, or neither")]
    TokenCounts,
    #[error("price {price} is not units x unit_price = {expected}")]
    Price { price: Amount, expected: Amount },
    #[error("completed_at is before started_at")]
    Timestamps,
    #[error("timestamp {0} is outside {TIMESTAMP_S_MIN}..={TIMESTAMP_S_MAX}")]
    TimestampRange(i64),
    #[error("attempt {0} is outside 1..={ATTEMPT_MAX}")]
    Attempt(u32),
    #[error("signature algorithm {0:?} is not Ed25519")]
    Algorithm(String),
    #[error("key {0} is not a known key")]
    UnknownKey(KeyId),
    #[error("signature is not base64 of 64 bytes")]
    SignatureEncoding,
    #[error("signature does not verify")]
    BadSignature,
    #[error("the receipt has no countersignature")]
    MissingCountersignature,
    #[error("too many receipts in one batch (at most {VERIFY_BATCH_MAX})")]
    BatchTooLarge,
    #[error(transparent)]
    Canonical(#[from] JcsError),
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// One object: the body's members and the two signatures beside them, closed as parsing is. (A
/// derived schema would be `allOf` the body's closed schema and the signatures, which no
/// receipt satisfies.)
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Receipt {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{RefBuilder, Schema};
        use utoipa::openapi::RefOr;
        use utoipa::ToSchema;
        let RefOr::T(Schema::Object(mut object)) = <ReceiptBody as utoipa::PartialSchema>::schema() else {
            unreachable!("ReceiptBody derives an object schema")
        };
        let envelope = |description: &str| RefBuilder::new().ref_location_from_schema_name(SignatureEnvelope::name()).description(Some(description)).into();
        object.description = Some("A signed usage receipt: the signed body's members, the provider's `signature` and the marketplace's `countersignature`".into());
        object.properties.insert("signature".into(), envelope("The provider's signature, by its registered key"));
        object.properties.insert("countersignature".into(), envelope("The marketplace's countersignature, added when the API accepts the receipt"));
        object.required.push("signature".into());
        object.into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Receipt {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        <ReceiptBody as utoipa::ToSchema>::schemas(schemas);
        schemas.push((SignatureEnvelope::name().into(), <SignatureEnvelope as utoipa::PartialSchema>::schema()));
        <SignatureEnvelope as utoipa::ToSchema>::schemas(schemas);
    }
}

impl TryFrom<serde_json::Map<String, serde_json::Value>> for Receipt {
    type Error = serde_json::Error;

    fn try_from(mut members: serde_json::Map<String, serde_json::Value>) -> Result<Self, Self::Error> {
        use serde::de::Error;
        let signature = members.remove("signature").ok_or_else(|| Self::Error::missing_field("signature"))?;
        let countersignature = members.remove("countersignature");
        Ok(Receipt {
            signature: serde_json::from_value(signature)?,
            countersignature: countersignature.map(serde_json::from_value).transpose()?,
            // ReceiptBody denies unknown fields, so any extra member fails here.
            body: serde_json::from_value(serde_json::Value::Object(members))?,
        })
    }
}

impl UnitType {
    /// What a backend's time is: GPU-seconds on CUDA, wall-clock seconds of an upstream
    /// server's answer, CPU-seconds on anything else (the CPU backend, and the CPU inference
    /// engine).
    pub fn metered_by(backend: &str) -> UnitType {
        match backend {
            "cuda" => UnitType::GpuSeconds,
            UPSTREAM_BACKEND => UnitType::WallSeconds,
            _ => UnitType::CpuSeconds,
        }
    }

}

/// The job a receipt is for, as the marketplace quoted and assigned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobTerms {
    pub job_id: JobId,
    pub gpu_id: ListingId,
    pub attempt: u32,
    pub provider: Address,
    pub client: Address,
    pub unit_price: Rate,
    pub model: Option<ModelName>,
}

/// What a worker measured for a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metered {
    pub units: GpuMillis,
    pub unit_type: UnitType,
    /// `(prompt, completion)` tokens of a text-generation job.
    pub tokens: Option<(u32, u32)>,
}

impl ReceiptBody {
    /// The body of a new receipt in this build's version: `metered` at the job's unit price
    /// (`money`'s rule 3), between `started_at` and `completed_at` (unix seconds). The one
    /// builder the worker and the marketplace's tests share.
    pub fn new(job: JobTerms, metered: Metered, started_at: i64, completed_at: i64) -> Result<ReceiptBody, MoneyError> {
        Ok(ReceiptBody {
            version: RECEIPT_VERSION,
            receipt_id: ReceiptId::generate(),
            job_id: job.job_id,
            gpu_id: job.gpu_id,
            attempt: job.attempt,
            provider: job.provider,
            client: job.client,
            units: metered.units,
            unit_type: metered.unit_type,
            unit_price: job.unit_price,
            price: job.unit_price.price(metered.units)?,
            model: job.model,
            started_at,
            completed_at,
            prompt_tokens: metered.tokens.map(|t| t.0),
            completion_tokens: metered.tokens.map(|t| t.1),
        })
    }

    /// Checks what a receipt must satisfy on its own: version, attempt, timestamps and that the
    /// price is exactly `units x unit_price` by the documented rounding.
    pub fn check(&self) -> Result<(), ReceiptError> {
        if !(RECEIPT_VERSION_MIN..=RECEIPT_VERSION).contains(&self.version) {
            return Err(ReceiptError::Version(self.version));
        }
        let has_tokens = self.prompt_tokens.is_some() || self.completion_tokens.is_some();
        if self.version == 1 {
            if self.unit_type != UnitType::GpuSeconds {
                return Err(ReceiptError::NotInVersion { version: 1, what: "units other than gpu_seconds" });
            }
            if has_tokens {
                return Err(ReceiptError::NotInVersion { version: 1, what: "token counts" });
            }
        }
        if self.prompt_tokens.is_some() != self.completion_tokens.is_some() {
            return Err(ReceiptError::TokenCounts);
        }
        if !(1..=ATTEMPT_MAX).contains(&self.attempt) {
            return Err(ReceiptError::Attempt(self.attempt));
        }
        for t in [self.started_at, self.completed_at] {
            if !(TIMESTAMP_S_MIN..=TIMESTAMP_S_MAX).contains(&t) {
                return Err(ReceiptError::TimestampRange(t));
            }
        }
        if self.completed_at < self.started_at {
            return Err(ReceiptError::Timestamps);
        }
        let expected = self.unit_price.price(self.units)?;
        if expected != self.price {
            return Err(ReceiptError::Price { price: self.price, expected });
        }
        Ok(())
    }

    /// The bytes both signatures cover: RFC 8785 canonical JSON of this body.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, ReceiptError> {
        let mut out = Vec::with_capacity(CANONICAL_BYTES_HINT);
        self.write_canonical(&mut out)?;
        Ok(out)
    }

    /// Appends the RFC 8785 form of the body to `out`, without building a JSON value: the
    /// members in their canonical order ([`CanonicalBody`]) through serde_json's compact writer,
    /// whose output for strings (escaping only `"`, `\` and control characters, lowercase
    /// `\u00xx`) and for these integers (all below 2^53) is what RFC 8785 prints. A test holds it
    /// to `jcs::canonicalize` of the body's JSON value on arbitrary bodies.
    pub fn write_canonical(&self, out: &mut Vec<u8>) -> Result<(), ReceiptError> {
        for n in [self.started_at.unsigned_abs(), self.completed_at.unsigned_abs()] {
            if n > jcs::INTEGER_MAGNITUDE_MAX {
                return Err(jcs::JcsError::Number(n.to_string()).into());
            }
        }
        serde_json::to_writer(out, &CanonicalBody::of(self)).expect("writing to a Vec");
        Ok(())
    }

    /// Runs `f` on the canonical bytes, in this thread's reused buffer (signing and verifying
    /// allocate nothing for them once the buffer has grown).
    fn with_canonical<T>(&self, f: impl FnOnce(&[u8]) -> T) -> Result<T, ReceiptError> {
        CANONICAL_BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            buffer.clear();
            self.write_canonical(&mut buffer)?;
            let result = f(&buffer);
            if buffer.capacity() > CANONICAL_BUFFER_BYTES_MAX {
                *buffer = Vec::with_capacity(CANONICAL_BYTES_HINT);
            }
            Ok(result)
        })
    }

    /// Checks the body and signs it with the provider's key.
    pub fn sign(self, key: &NamedSigningKey) -> Result<Receipt, ReceiptError> {
        self.check()?;
        let signature = self.with_canonical(|message| key.sign(message))?;
        Ok(Receipt { body: self, signature, countersignature: None })
    }
}

/// The verifying key and decoded signature for `envelope`, from known keys only.
fn resolve<'k>(envelope: &SignatureEnvelope, keys: &'k KeySet) -> Result<(&'k VerifyingKey, DalekSignature), ReceiptError> {
    if envelope.alg != ALG_ED25519 {
        return Err(ReceiptError::Algorithm(envelope.alg.clone()));
    }
    let key = keys.get(&envelope.key_id).ok_or_else(|| ReceiptError::UnknownKey(envelope.key_id.clone()))?;
    let sig = decode_signature(&envelope.sig).ok_or(ReceiptError::SignatureEncoding)?;
    Ok((key, sig))
}

fn verify_one(body: &ReceiptBody, envelope: &SignatureEnvelope, keys: &KeySet) -> Result<(), ReceiptError> {
    body.with_canonical(|message| verify_message(message, envelope, keys))?
}

fn verify_message(message: &[u8], envelope: &SignatureEnvelope, keys: &KeySet) -> Result<(), ReceiptError> {
    let (key, sig) = resolve(envelope, keys)?;
    key.verify_strict(message, &sig).map_err(|_| ReceiptError::BadSignature)
}

impl Receipt {
    /// Verifies the body's rules and the provider's signature against `provider_keys`.
    pub fn verify(&self, provider_keys: &KeySet) -> Result<(), ReceiptError> {
        self.body.check()?;
        verify_one(&self.body, &self.signature, provider_keys)
    }

    /// Verifies the provider's signature and the marketplace's countersignature.
    pub fn verify_countersigned(&self, provider_keys: &KeySet, marketplace_keys: &KeySet) -> Result<(), ReceiptError> {
        self.body.check()?;
        let counter = self.countersignature.as_ref().ok_or(ReceiptError::MissingCountersignature)?;
        self.body.with_canonical(|message| {
            verify_message(message, &self.signature, provider_keys)?;
            verify_message(message, counter, marketplace_keys)
        })?
    }

    /// Adds the marketplace's countersignature (after the caller verified the receipt).
    pub fn countersign(&mut self, marketplace_key: &NamedSigningKey) -> Result<(), ReceiptError> {
        self.countersignature = Some(marketplace_key.sign(&self.body.canonical_bytes()?));
        Ok(())
    }
}

/// Whether a signature's R can pass `verify_strict` at all: a canonical encoding of a point of
/// prime order. `verify_strict` compares R's bytes with [s]B - [k]A, which for a registered
/// (prime-order) key is a canonical prime-order point; the batch equation decompresses R and
/// weighs it by a random coefficient, so a small-order R, or one with a torsion component or a
/// non-canonical encoding, could pass the batch while failing alone. Such signatures are refused
/// before the batch, so batch and single verification agree on every input.
fn r_is_strict(signature: &ed25519_dalek::Signature) -> bool {
    use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
    use curve25519_dalek::scalar::Scalar;
    let r = signature.r_bytes();
    // Canonical: y < p = 2^255 - 19 (the sign bit aside), read from the bytes. The encodings of
    // x = 0 with the sign bit set are of small-order points, refused below.
    let y_high_ones = r[1..31].iter().all(|&b| b == 0xff) && r[31] & 0x7f == 0x7f;
    if y_high_ones && r[0] >= 0xed {
        return false;
    }
    let Some(point) = CompressedEdwardsY(*r).decompress() else {
        return false;
    };
    // Prime order: not small order, and [l]R = [l - 1]R + R is the identity (variable time:
    // R is public), which rules out a torsion component.
    if point.is_small_order() {
        return false;
    }
    let l_minus_1 = -Scalar::ONE;
    let times_l = EdwardsPoint::vartime_double_scalar_mul_basepoint(&l_minus_1, &point, &Scalar::ZERO) + point;
    curve25519_dalek::traits::IsIdentity::is_identity(&times_l)
}

/// Verifies many receipts' provider signatures at once: one Ed25519 batch equation for all that
/// pass the per-receipt checks, and one by one only if the batch fails, to say which. Its
/// answer for each receipt is `Receipt::verify`'s (`r_is_strict`; keys of prime order only).
pub fn verify_batch(receipts: &[Receipt], provider_keys: &KeySet) -> Result<Vec<Result<(), ReceiptError>>, ReceiptError> {
    if receipts.len() > VERIFY_BATCH_MAX {
        return Err(ReceiptError::BatchTooLarge);
    }
    let mut results: Vec<Result<(), ReceiptError>> = Vec::with_capacity(receipts.len());
    let mut messages: Vec<Vec<u8>> = Vec::with_capacity(receipts.len());
    let mut signatures = Vec::with_capacity(receipts.len());
    let mut keys = Vec::with_capacity(receipts.len());
    let mut batched = Vec::with_capacity(receipts.len());
    for (i, receipt) in receipts.iter().enumerate() {
        let prepared = receipt.body.check().and_then(|()| {
            let message = receipt.body.canonical_bytes()?;
            let (key, sig) = resolve(&receipt.signature, provider_keys)?;
            Ok((message, key, sig))
        });
        match prepared {
            Ok((_, _, sig)) if !r_is_strict(&sig) => results.push(Err(ReceiptError::BadSignature)),
            Ok((message, key, sig)) => {
                messages.push(message);
                keys.push(*key);
                signatures.push(sig);
                batched.push(i);
                results.push(Ok(()));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    let message_refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    if !batched.is_empty() && ed25519_dalek::verify_batch(&message_refs, &signatures, &keys).is_err() {
        for (n, &i) in batched.iter().enumerate() {
            results[i] = keys[n].verify_strict(message_refs[n], &signatures[n]).map_err(|_| ReceiptError::BadSignature);
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::KeySetDocument;

    /// The seed page's example, a version 1 receipt.
    pub(crate) fn sample_body() -> ReceiptBody {
        ReceiptBody {
            version: RECEIPT_VERSION_MIN,
            receipt_id: ReceiptId::parse("rcpt-20260124-001234").unwrap(),
            job_id: JobId::parse("job-abc123").unwrap(),
            gpu_id: ListingId::parse("gpu-0001").unwrap(),
            attempt: 1,
            provider: Address::parse("ait1miner0000001").unwrap(),
            client: Address::parse("ait1client000001").unwrap(),
            units: GpuMillis::parse("2.5").unwrap(),
            unit_type: UnitType::GpuSeconds,
            unit_price: Rate::parse("2.0").unwrap(),
            price: Amount::parse("5.0").unwrap(),
            model: Some(ModelName::parse("llama3.2").unwrap()),
            started_at: 1_737_730_800,
            completed_at: 1_737_730_803,
            prompt_tokens: None,
            completion_tokens: None,
        }
    }

    fn provider_key() -> NamedSigningKey {
        NamedSigningKey::from_seed(KeyId::parse("miner-ed25519-2026-01").unwrap(), [42; 32])
    }

    fn keys_of(key: &NamedSigningKey) -> KeySet {
        KeySet::from_document(&KeySetDocument::of(vec![key.public()])).unwrap()
    }

    #[test]
    fn version_2_adds_cpu_seconds_and_token_counts_which_version_1_cannot_carry() {
        let key = provider_key();
        let mut v2 = sample_body();
        v2.version = 2;
        v2.unit_type = UnitType::CpuSeconds;
        v2.prompt_tokens = Some(24);
        v2.completion_tokens = Some(32);
        assert_eq!(v2.clone().sign(&key).unwrap().verify(&keys_of(&key)), Ok(()));

        let mut v1 = v2.clone();
        v1.version = 1;
        assert!(matches!(v1.check(), Err(ReceiptError::NotInVersion { version: 1, .. })));
        v1.unit_type = UnitType::GpuSeconds;
        assert!(matches!(v1.check(), Err(ReceiptError::NotInVersion { version: 1, what: "token counts" })));
        v1.prompt_tokens = None;
        v1.completion_tokens = None;
        assert_eq!(v1.check(), Ok(()));

        let mut half = v2.clone();
        half.completion_tokens = None;
        assert_eq!(half.check(), Err(ReceiptError::TokenCounts));
        for version in [0, RECEIPT_VERSION + 1] {
            let mut other = v2.clone();
            other.version = version;
            assert_eq!(other.check(), Err(ReceiptError::Version(version)));
        }
    }

    #[test]
    fn the_seed_receipt_signs_and_verifies() {
        let key = provider_key();
        let receipt = sample_body().sign(&key).unwrap();
        assert_eq!(receipt.verify(&keys_of(&key)), Ok(()));
        let json = serde_json::to_value(&receipt).unwrap();
        assert_eq!(json["units"], "2.5");
        assert_eq!(json["price"], "5");
        assert_eq!(json["unit_type"], "gpu_seconds");
        assert_eq!(json["signature"]["alg"], "Ed25519");
        let back: Receipt = serde_json::from_value(json).unwrap();
        assert_eq!(back, receipt);
    }

    proptest::proptest! {
        /// The direct canonical writer is RFC 8785 of the body's JSON value, on any body.
        #[test]
        fn the_canonical_writer_equals_jcs_of_the_json_value(
            version in 1u32..=2, attempt in 1u32..=ATTEMPT_MAX, millis in 0u64..=1 << 40, nano in 0u64..=1 << 50,
            started in TIMESTAMP_S_MIN..=TIMESTAMP_S_MAX, completed in TIMESTAMP_S_MIN..=TIMESTAMP_S_MAX,
            tokens in proptest::option::of((0u32..=u32::MAX, 0u32..=u32::MAX)), with_model in proptest::bool::ANY,
            id in "[a-z0-9]{1,24}", unit in 0usize..3,
        ) {
            let mut body = sample_body();
            body.version = version;
            body.attempt = attempt;
            body.units = GpuMillis::from_millis(millis);
            body.price = Amount::from_raw(nano);
            body.started_at = started;
            body.completed_at = completed;
            body.prompt_tokens = tokens.map(|t| t.0);
            body.completion_tokens = tokens.map(|t| t.1);
            body.model = if with_model { Some(ModelName::parse(&format!("m-{id}")).unwrap()) } else { None };
            body.receipt_id = ReceiptId::parse(&format!("rcpt-{id}")).unwrap();
            body.job_id = JobId::parse(&format!("job-{id}")).unwrap();
            body.unit_type = [UnitType::GpuSeconds, UnitType::CpuSeconds, UnitType::WallSeconds][unit];
            let generic = jcs::canonicalize(&serde_json::to_value(&body).unwrap()).unwrap();
            proptest::prop_assert_eq!(String::from_utf8(body.canonical_bytes().unwrap()).unwrap(), String::from_utf8(generic).unwrap());
        }
    }

    #[test]
    fn canonical_bytes_are_sorted_compact_and_exclude_signatures() {
        let text = String::from_utf8(sample_body().canonical_bytes().unwrap()).unwrap();
        assert!(text.starts_with(r#"{"attempt":1,"client":"ait1client000001","completed_at":1737730803,"gpu_id":"gpu-0001","#), "{text}");
        assert!(!text.contains("signature"));
        assert!(!text.contains(' '));
    }

    #[test]
    fn tampering_with_any_field_fails_verification() {
        let key = provider_key();
        let keys = keys_of(&key);
        let receipt = sample_body().sign(&key).unwrap();
        let value = serde_json::to_value(&receipt).unwrap();
        let tampered_fields: [(&str, serde_json::Value); 13] = [
            ("receipt_id", "rcpt-20260124-001235".into()),
            ("job_id", "job-abc124".into()),
            ("gpu_id", "gpu-0002".into()),
            ("attempt", 2.into()),
            ("provider", "ait1miner0000002".into()),
            ("client", "ait1client000002".into()),
            ("units", "2.4".into()),
            ("unit_price", "1.9".into()),
            ("price", "5.000000001".into()),
            ("model", "codellama".into()),
            ("started_at", 1_737_730_801.into()),
            ("completed_at", 1_737_730_804.into()),
            ("version", 2.into()),
        ];
        for (field, replacement) in tampered_fields {
            let mut v = value.clone();
            v[field] = replacement;
            let tampered: Receipt = serde_json::from_value(v).unwrap();
            assert!(tampered.verify(&keys).is_err(), "tampered {field} still verifies");
        }
        let mut sig = receipt.clone();
        let mut raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &sig.signature.sig).unwrap();
        raw[10] ^= 1;
        sig.signature.sig = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, raw);
        assert_eq!(sig.verify(&keys), Err(ReceiptError::BadSignature));
        let mut unknown = receipt.clone();
        unknown.signature.key_id = KeyId::parse("someone-else").unwrap();
        assert!(matches!(unknown.verify(&keys), Err(ReceiptError::UnknownKey(_))));
        let mut alg = receipt.clone();
        alg.signature.alg = "none".into();
        assert!(matches!(alg.verify(&keys), Err(ReceiptError::Algorithm(_))));
        let mut garbage = receipt;
        garbage.signature.sig = "Fql0...".into();
        assert_eq!(garbage.verify(&keys), Err(ReceiptError::SignatureEncoding));
    }

    #[test]
    fn a_key_the_receipt_names_but_the_set_lacks_is_refused() {
        // An attacker signs with their own key under the provider's key id: the set decides.
        let attacker = NamedSigningKey::from_seed(provider_key().key_id, [9; 32]);
        let forged = sample_body().sign(&attacker).unwrap();
        assert_eq!(forged.verify(&keys_of(&provider_key())), Err(ReceiptError::BadSignature));
        assert!(matches!(forged.verify(&KeySet::new()), Err(ReceiptError::UnknownKey(_))));
    }

    #[test]
    fn bodies_that_break_the_rules_are_refused_before_signing() {
        let key = provider_key();
        let mut price = sample_body();
        price.price = Amount::parse("5.1").unwrap();
        assert!(matches!(price.sign(&key), Err(ReceiptError::Price { .. })));
        let mut time = sample_body();
        time.completed_at = time.started_at - 1;
        assert_eq!(time.sign(&key).unwrap_err(), ReceiptError::Timestamps);
        let mut attempt = sample_body();
        attempt.attempt = 0;
        assert_eq!(attempt.sign(&key).unwrap_err(), ReceiptError::Attempt(0));
        let mut range = sample_body();
        range.started_at = 0;
        assert_eq!(range.sign(&key).unwrap_err(), ReceiptError::TimestampRange(0));
        let unknown_field = serde_json::json!({"extra": 1});
        let mut v = serde_json::to_value(sample_body()).unwrap();
        v.as_object_mut().unwrap().extend(unknown_field.as_object().unwrap().clone());
        assert!(serde_json::from_value::<ReceiptBody>(v).is_err());
    }

    #[test]
    fn countersignatures_cover_the_same_bytes_under_the_marketplace_key() {
        let provider = provider_key();
        let market = NamedSigningKey::from_seed(KeyId::parse("aitbc-market-1").unwrap(), [1; 32]);
        let mut receipt = sample_body().sign(&provider).unwrap();
        assert_eq!(receipt.verify_countersigned(&keys_of(&provider), &keys_of(&market)), Err(ReceiptError::MissingCountersignature));
        receipt.countersign(&market).unwrap();
        assert_eq!(receipt.verify_countersigned(&keys_of(&provider), &keys_of(&market)), Ok(()));
        // The provider's key cannot stand in for the marketplace's.
        assert!(receipt.verify_countersigned(&keys_of(&provider), &keys_of(&provider)).is_err());
    }

    #[test]
    fn batch_verification_pinpoints_the_bad_receipts() {
        let key = provider_key();
        let keys = keys_of(&key);
        let mut receipts: Vec<Receipt> = (0..8)
            .map(|i| {
                let mut body = sample_body();
                body.receipt_id = ReceiptId::parse(&format!("rcpt-{i}")).unwrap();
                body.sign(&key).unwrap()
            })
            .collect();
        assert!(verify_batch(&receipts, &keys).unwrap().iter().all(Result::is_ok));
        receipts[3].body.units = GpuMillis::from_millis(1);
        receipts[3].body.price = receipts[3].body.unit_price.price(receipts[3].body.units).unwrap();
        receipts[5].signature.key_id = KeyId::parse("nobody").unwrap();
        let results = verify_batch(&receipts, &keys).unwrap();
        for (i, r) in results.iter().enumerate() {
            match i {
                3 => assert_eq!(r, &Err(ReceiptError::BadSignature)),
                5 => assert!(matches!(r, Err(ReceiptError::UnknownKey(_)))),
                _ => assert_eq!(r, &Ok(()), "receipt {i}"),
            }
        }
        assert!(verify_batch(&[], &keys).unwrap().is_empty());
    }

    /// Signatures a key's owner can make that satisfy the batch equation's terms in ways a
    /// single `verify_strict` refuses: R the identity (s = k·a makes the equation exact), R of
    /// small order, R with a torsion component. Batch and single verification give the same
    /// answer for each, alone and mixed with honest receipts.
    #[test]
    fn batch_and_single_verification_agree_on_edge_case_signatures() {
        use base64::engine::general_purpose::STANDARD as BASE64_STANDARD;
        use base64::Engine;
        use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
        use curve25519_dalek::edwards::EdwardsPoint;
        use curve25519_dalek::scalar::Scalar;
        use curve25519_dalek::traits::Identity;
        use sha2::{Digest, Sha512};
        let key = provider_key();
        let keys = keys_of(&key);
        let secret = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
        assert_eq!(BASE64_STANDARD.encode(secret.verifying_key().as_bytes()), key.public().public_key);
        let a = secret.to_scalar();
        let public = secret.verifying_key().to_bytes();
        // (R, s) with s = r + H(R || A || M)·a for the given R = [r]B + extra.
        let made = |i: usize, r: Scalar, extra: EdwardsPoint| -> Receipt {
            let mut body = sample_body();
            body.receipt_id = ReceiptId::parse(&format!("rcpt-edge-{i}")).unwrap();
            let message = body.canonical_bytes().unwrap();
            let r_bytes = (ED25519_BASEPOINT_POINT * r + extra).compress().to_bytes();
            let hash: [u8; 64] = Sha512::new().chain_update(r_bytes).chain_update(public).chain_update(&message).finalize().into();
            let s = r + Scalar::from_bytes_mod_order_wide(&hash) * a;
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice(&r_bytes);
            sig[32..].copy_from_slice(s.as_bytes());
            let mut receipt = body.sign(&key).unwrap();
            receipt.signature.sig = BASE64_STANDARD.encode(sig);
            receipt
        };
        let honest = |i: usize| {
            let mut body = sample_body();
            body.receipt_id = ReceiptId::parse(&format!("rcpt-honest-{i}")).unwrap();
            body.sign(&key).unwrap()
        };
        let r = Scalar::from(7u64);
        let edge = vec![
            made(0, Scalar::ZERO, EdwardsPoint::identity()),
            made(1, Scalar::ZERO, EIGHT_TORSION[1]),
            made(2, r, EIGHT_TORSION[1]),
            made(3, r, EIGHT_TORSION[4]),
            made(4, r, EIGHT_TORSION[2]),
        ];
        // The control: the same construction without torsion is an ordinary valid signature.
        assert_eq!(made(5, r, EdwardsPoint::identity()).verify(&keys), Ok(()));
        for receipt in &edge {
            assert_eq!(receipt.verify(&keys), Err(ReceiptError::BadSignature), "{}", receipt.body.receipt_id);
            assert_eq!(verify_batch(std::slice::from_ref(receipt), &keys).unwrap(), vec![receipt.verify(&keys)], "{} alone", receipt.body.receipt_id);
        }
        let mut mixed: Vec<Receipt> = (0..4).map(honest).collect();
        mixed.extend(edge);
        mixed.push(made(5, r, EdwardsPoint::identity()));
        let single: Vec<_> = mixed.iter().map(|r| r.verify(&keys)).collect();
        assert_eq!(verify_batch(&mixed, &keys).unwrap(), single);
        assert_eq!(single.iter().filter(|r| r.is_ok()).count(), 5);
    }
}
