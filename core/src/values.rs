//! Domain values as parse-don't-validate newtypes: once a value of one of these types exists,
//! it is valid, so code past the edge never checks again.
//!
//! Every constructor from text is `parse`, returns a [`ValueError`] that names the field and
//! says what was expected, and bounds the length before looking at the content.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Why a domain value was refused. `field` is the value's name as the API and CLI spell it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ValueError {
    pub field: &'static str,
    pub reason: String,
}

impl ValueError {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self { field, reason: reason.into() }
    }
}

/// Defines a string newtype with a `parse` that applies `$check` to text at most `$len_max`
/// bytes long, plus Display, FromStr and string serde; with feature `openapi`, a string schema
/// described by the doc comment, and `$pattern` where the grammar is a plain regular expression.
macro_rules! string_value {
    ($(#[doc = $doc:literal])* $name:ident, $field:literal, $len_max:expr, $check:expr, pattern = $pattern:expr) => {
        $(#[doc = $doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The longest accepted text, in bytes.
            pub const LEN_MAX: usize = $len_max;
            pub const FIELD: &'static str = $field;
            /// The grammar as a regular expression: the API document's pattern, and exactly
            /// what `parse` accepts up to `LEN_MAX` bytes (a property test checks the two agree).
            pub const PATTERN: &'static str = $pattern;

            pub fn parse(text: &str) -> Result<Self, ValueError> {
                if text.is_empty() {
                    return Err(ValueError::new($field, "must not be empty"));
                }
                if text.len() > Self::LEN_MAX {
                    return Err(ValueError::new($field, format!("longer than {} bytes", Self::LEN_MAX)));
                }
                let check: fn(&str) -> Result<(), String> = $check;
                check(text).map_err(|reason| ValueError::new($field, reason))?;
                Ok(Self(text.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
        impl FromStr for $name {
            type Err = ValueError;
            fn from_str(s: &str) -> Result<Self, ValueError> {
                Self::parse(s)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                crate::schema::string(&[$($doc),*], Self::LEN_MAX, Some(Self::PATTERN.to_string()))
            }
        }
        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}
    };
}

fn charset(text: &str, allowed: impl Fn(u8) -> bool, what: &str) -> Result<(), String> {
    match text.bytes().position(|b| !allowed(b)) {
        None => Ok(()),
        Some(i) => Err(format!("character {} is not allowed ({what})", i + 1)),
    }
}

fn lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// An id: a fixed prefix, a dash, and 1..=64 of `[a-z0-9_-]`. Generated ids use UUIDv7 so they
/// sort by creation time.
fn prefixed_id(text: &str, prefix: &str) -> Result<(), String> {
    let rest = text
        .strip_prefix(prefix)
        .and_then(|t| t.strip_prefix('-'))
        .ok_or_else(|| format!("must start with \"{prefix}-\""))?;
    if rest.is_empty() {
        return Err(format!("nothing after \"{prefix}-\""));
    }
    charset(rest, |b| lower_alnum(b) || b == b'-' || b == b'_', "a-z, 0-9, '-', '_'")
}

macro_rules! id_value {
    ($(#[doc = $doc:literal])* $name:ident, $field:literal, $prefix:literal) => {
        string_value!($(#[doc = $doc])* $name, $field, 72, |t| prefixed_id(t, $prefix), pattern = concat!("^", $prefix, "-[a-z0-9_-]+$"));
        impl $name {
            pub const PREFIX: &'static str = $prefix;
            /// A fresh id from a UUIDv7 (time-ordered) value.
            pub fn generate() -> Self {
                Self::from_uuid(uuid::Uuid::now_v7())
            }
            pub fn from_uuid(id: uuid::Uuid) -> Self {
                Self(format!("{}-{}", $prefix, id.simple()))
            }
        }
    };
}

id_value!(
    /// A job, e.g. `job-0192f...`.
    JobId, "job_id", "job"
);
id_value!(
    /// A receipt, e.g. `rcpt-20260124-001234` or a generated `rcpt-0192f...`.
    ReceiptId, "receipt_id", "rcpt"
);
id_value!(
    /// A GPU listing, the `--gpu-id` of the CLI.
    ListingId, "gpu_id", "gpu"
);
id_value!(
    /// A price quote.
    QuoteId, "quote_id", "qt"
);
id_value!(
    /// A ledger transfer.
    TransferId, "transfer_id", "tx"
);
id_value!(
    /// A hold on a client's funds (one per job).
    HoldId, "hold_id", "hold"
);
id_value!(
    /// A worker process serving a provider's listings.
    WorkerId, "worker_id", "wrk"
);
id_value!(
    /// A scheduler batch (settlement, payout or sweep).
    BatchId, "batch_id", "batch"
);
id_value!(
    /// A capacity reservation on a GPU listing, e.g. `resv-0192f...`.
    ReservationId, "reservation_id", "resv"
);

string_value!(
    /// An account address: `ait1` then 8..=60 of `[a-z0-9]`, e.g. `ait1client...`. Clients and
    /// providers are accounts; the platform's fee account is one too.
    Address, "address", 64, |t| {
        let rest = t.strip_prefix("ait1").ok_or("must start with \"ait1\"")?;
        if rest.len() < 8 {
            return Err("needs at least 8 characters after \"ait1\"".into());
        }
        charset(rest, lower_alnum, "a-z, 0-9")
    },
    pattern = "^ait1[a-z0-9]{8,60}$"
);

string_value!(
    /// An agent's name for its account, e.g. `enterprise-agent-123` (the guide's `client_id`):
    /// 3..=64 of `[a-z0-9]` in words joined by single dashes, with at least one dash so that it
    /// never reads as an address (`ait1...` has none).
    AgentName, "name", 64, |t| {
        charset(t, |b| lower_alnum(b) || b == b'-', "a-z, 0-9, '-'")?;
        if t.len() < 3 {
            return Err("at least 3 characters".into());
        }
        if t.starts_with('-') || t.ends_with('-') || t.contains("--") {
            return Err("dashes only between words".into());
        }
        if !t.contains('-') {
            return Err("at least two words joined by '-' (a name never reads as an address)".into());
        }
        Ok(())
    },
    pattern = "^[a-z0-9]+(-[a-z0-9]+)+$"
);

/// An account named either way: its address, or the agent name it registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountRef {
    Address(Address),
    Name(AgentName),
}

impl AccountRef {
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        if let Ok(address) = Address::parse(text) {
            return Ok(Self::Address(address));
        }
        AgentName::parse(text).map(Self::Name).map_err(|_| ValueError::new("client", "an address (ait1...) or an agent name (words joined by '-')"))
    }
}

impl fmt::Display for AccountRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Address(a) => a.fmt(f),
            Self::Name(n) => n.fmt(f),
        }
    }
}

impl Serialize for AccountRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AccountRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for AccountRef {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::schema::string(&["An account: its address (`ait1...`) or the agent name it registered (`enterprise-agent-123`)."], Address::LEN_MAX, Some("^(ait1[a-z0-9]{8,60}|[a-z0-9]+(-[a-z0-9]+)+)$".to_string()))
    }
}
#[cfg(feature = "openapi")]
impl utoipa::ToSchema for AccountRef {}

impl Address {
    /// A fresh random address.
    pub fn generate() -> Self {
        Self(format!("ait1{}", uuid::Uuid::new_v4().simple()))
    }
}

string_value!(
    /// A market region such as `us-west`: lowercase words joined by single dashes. Whether the
    /// region exists is a question for the configuration's region table, at the edge.
    Region, "region", 32, |t| {
        charset(t, |b| lower_alnum(b) || b == b'-', "a-z, 0-9, '-'")?;
        if t.starts_with('-') || t.ends_with('-') || t.contains("--") {
            return Err("dashes only between words".into());
        }
        Ok(())
    },
    pattern = "^[a-z0-9]+(-[a-z0-9]+)*$"
);

string_value!(
    /// A model name from the rate card or a listing's own model prices, e.g. `llama3.2` or `llama3.2:1b`.
    ModelName, "model", 64, |t| {
        if !t.as_bytes()[0].is_ascii_alphanumeric() {
            return Err("must start with a letter or digit".into());
        }
        charset(t, |b| lower_alnum(b) || b".:_-".contains(&b), "a-z, 0-9, '.', ':', '_', '-'")
    },
    pattern = "^[a-z0-9][a-z0-9.:_-]*$"
);

string_value!(
    /// A GPU listing's display name, e.g. `My-GPU`: printable ASCII, no leading or trailing space.
    GpuName, "name", 64, |t| {
        charset(t, |b| (0x20..0x7f).contains(&b), "printable ASCII")?;
        if t.starts_with(' ') || t.ends_with(' ') {
            return Err("no leading or trailing spaces".into());
        }
        Ok(())
    },
    pattern = "^[!-~]([ -~]*[!-~])?$"
);

string_value!(
    /// The id of a signing key, e.g. `miner-ed25519-2026-01`.
    KeyId, "key_id", 64, |t| charset(t, |b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b), "letters, digits, '-', '_', '.', ':'"),
    pattern = "^[A-Za-z0-9_.:-]+$"
);

/// GPU memory in whole GiB, 1..=[`GpuMemoryGib::MAX`] (the guide's `--memory 24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct GpuMemoryGib(u32);

impl GpuMemoryGib {
    /// Larger than any single GPU sold; a bound, not a forecast.
    pub const MAX: u32 = 4_096;

    pub fn new(gib: u64) -> Result<Self, ValueError> {
        match u32::try_from(gib) {
            Ok(g) if (1..=Self::MAX).contains(&g) => Ok(Self(g)),
            _ => Err(ValueError::new("memory", format!("must be 1..={} GiB, got {gib}", Self::MAX))),
        }
    }
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let gib = text
            .parse::<u64>()
            .map_err(|_| ValueError::new("memory", format!("{text:?} is not a whole number of GiB")))?;
        Self::new(gib)
    }
    pub fn gib(self) -> u32 {
        self.0
    }
}

impl<'de> Deserialize<'de> for GpuMemoryGib {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(u64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for GpuMemoryGib {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .description(Some("GPU memory in whole GiB"))
            .minimum(Some(1))
            .maximum(Some(Self::MAX))
            .into()
    }
}
#[cfg(feature = "openapi")]
impl utoipa::ToSchema for GpuMemoryGib {}

/// A CUDA version `major.minor` (the guide's `--cuda-version 12.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CudaVersion {
    pub major: u8,
    pub minor: u8,
}

impl CudaVersion {
    pub const MAJOR_MAX: u8 = 99;
    pub const MINOR_MAX: u8 = 99;
    /// The longest accepted text, in bytes ("99.99").
    pub const LEN_MAX: usize = 5;
    /// What `parse` accepts, as the API document's pattern.
    pub const PATTERN: &'static str = r"^[1-9][0-9]?\.[0-9]{1,2}$";

    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let err = || ValueError::new("cuda_version", format!("{text:?} is not MAJOR.MINOR, e.g. \"12.1\""));
        if text.len() > Self::LEN_MAX {
            return Err(err());
        }
        let (major, minor) = text.split_once('.').ok_or_else(err)?;
        // One or two digits each, and no leading zero on the major (PATTERN says the same).
        let number = |s: &str| -> Result<u8, ValueError> {
            if s.is_empty() || s.len() > 2 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            s.parse().map_err(|_| err())
        };
        if major.starts_with('0') {
            return Err(err());
        }
        let (major, minor) = (number(major)?, number(minor)?);
        if major == 0 || major > Self::MAJOR_MAX || minor > Self::MINOR_MAX {
            return Err(err());
        }
        Ok(Self { major, minor })
    }
}

impl fmt::Display for CudaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl Serialize for CudaVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CudaVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for CudaVersion {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let description = format!("A CUDA version MAJOR.MINOR, e.g. \"12.1\": major 1..={}, minor 0..={}", Self::MAJOR_MAX, Self::MINOR_MAX);
        crate::schema::string(&[&description], Self::LEN_MAX, Some(Self::PATTERN.into()))
    }
}
#[cfg(feature = "openapi")]
impl utoipa::ToSchema for CudaVersion {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_need_their_prefix_and_a_safe_charset() {
        assert!(JobId::parse("job-abc123").is_ok());
        assert!(ReceiptId::parse("rcpt-20260124-001234").is_ok());
        let generated = ListingId::generate();
        assert_eq!(ListingId::parse(generated.as_str()).unwrap(), generated);
        for bad in ["", "abc123", "job-", "job_abc", "rcpt-abc", "job-ABC", "job-a b", "job-a/b"] {
            assert!(JobId::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!("job-{}", "a".repeat(80));
        assert_eq!(JobId::parse(&long).unwrap_err().reason, "longer than 72 bytes");
        let err = ListingId::parse("job-1").unwrap_err();
        assert_eq!(err.to_string(), "invalid gpu_id: must start with \"gpu-\"");
    }

    #[test]
    fn generated_ids_sort_by_creation_time() {
        let a = JobId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = JobId::generate();
        assert!(a < b);
    }

    #[test]
    fn agent_names_and_account_refs() {
        assert!(AgentName::parse("enterprise-agent-123").is_ok());
        for bad in ["ab", "agent", "-agent-1", "agent-", "agent--1", "Agent-1", "agent_1"] {
            assert!(AgentName::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(AccountRef::parse("ait1client0001").unwrap(), AccountRef::Address(Address::parse("ait1client0001").unwrap()));
        assert!(matches!(AccountRef::parse("enterprise-agent-456").unwrap(), AccountRef::Name(_)));
        assert!(AccountRef::parse("nobody").is_err());
        let pattern = regex_lite::Regex::new("^(ait1[a-z0-9]{8,60}|[a-z0-9]+(-[a-z0-9]+)+)$").unwrap();
        for text in ["ait1client0001", "enterprise-agent-456", "nobody", "ait1-x", "a-b", "ait1short"] {
            assert_eq!(pattern.is_match(text), AccountRef::parse(text).is_ok(), "{text:?}");
        }
    }

    #[test]
    fn addresses() {
        assert!(Address::parse("ait1client0001").is_ok());
        assert!(Address::parse(Address::generate().as_str()).is_ok());
        for bad in ["ait1", "ait1short", "ait2client0001", "AIT1client0001", "ait1client-0001"] {
            assert!(Address::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn regions_models_names_and_keys() {
        assert!(Region::parse("us-west").is_ok());
        for bad in ["US-WEST", "-us", "us-", "us--west", "us west", ""] {
            assert!(Region::parse(bad).is_err(), "{bad:?}");
        }
        for good in ["llama3.2", "llama3.2:1b", "codellama", "stable-diffusion"] {
            assert!(ModelName::parse(good).is_ok(), "{good}");
        }
        assert!(ModelName::parse(":x").is_err());
        assert!(ModelName::parse("Llama").is_err());
        assert!(GpuName::parse("My-GPU").is_ok());
        assert!(GpuName::parse("RTX 4090 #2").is_ok());
        assert!(GpuName::parse(" x").is_err());
        assert!(GpuName::parse("tab\there").is_err());
        assert!(KeyId::parse("miner-ed25519-2026-01").is_ok());
        assert!(KeyId::parse("key with space").is_err());
    }

    #[test]
    fn memory_and_cuda_version() {
        assert_eq!(GpuMemoryGib::parse("24").unwrap().gib(), 24);
        for bad in ["0", "-1", "24.5", "4097", "", "x"] {
            assert!(GpuMemoryGib::parse(bad).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<GpuMemoryGib>("0").is_err());
        assert!(serde_json::from_str::<GpuMemoryGib>("24.0").is_err());
        let v = CudaVersion::parse("12.1").unwrap();
        assert_eq!((v.major, v.minor, v.to_string()), (12, 1, "12.1".to_string()));
        assert!(CudaVersion::parse("12.10").unwrap() > CudaVersion::parse("12.9").unwrap());
        for bad in ["12", "12.", ".1", "0.1", "12.1.1", "1a.1", "100.1", "+1.1"] {
            assert!(CudaVersion::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn serde_parses_through_the_same_checks() {
        let region: Region = serde_json::from_str("\"us-west\"").unwrap();
        assert_eq!(region.as_str(), "us-west");
        let err = serde_json::from_str::<Region>("\"US\"").unwrap_err();
        assert!(err.to_string().contains("invalid region"), "{err}");
    }
}
