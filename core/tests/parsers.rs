//! Property tests over everything in `core` that reads outside input: no string or JSON value
//! makes a parser panic, and where the API document states a grammar as a pattern, the pattern
//! and the parser accept exactly the same strings (so generated clients send what the server
//! takes, and a fuzzer's schema-violating input is refused).
//!
//! Covered: money and metering strings, the string newtypes (addresses, ids, regions, models,
//! names, key ids), CUDA versions, job specs, receipts (parse, canonical form, verification),
//! RFC 8785 canonicalization, pricing input (strategies, tiers, parameters, quotes), schedules,
//! and the market configuration's TOML.

use aitbc_core::availability::{Hours, Schedule};
use aitbc_core::config::MarketConfig;
use aitbc_core::jcs;
use aitbc_core::jobspec::JobSpec;
use aitbc_core::money::{decimal_pattern, Amount, GpuMillis, Rate, AMOUNT_DECIMALS, RATE_DECIMALS, UNITS_DECIMALS};
use aitbc_core::pricing::{quote, ListingTerms, MarketSignals, PricingParams, QuoteRequest, RateCard, Strategy as PriceStrategy, Tier};
use aitbc_core::receipt::Receipt;
use aitbc_core::signing::{KeySet, NamedSigningKey};
use aitbc_core::values::{Address, CudaVersion, GpuName, JobId, KeyId, ListingId, ModelName, ReceiptId, Region, WorkerId};
use proptest::prelude::*;
use serde_json::Value;

/// Cases per property: enough to reach every branch of these small grammars on each run,
/// few enough to keep the suite within seconds.
const CASES: u32 = 2_000;

fn config() -> ProptestConfig {
    ProptestConfig { cases: CASES, ..ProptestConfig::default() }
}

/// Strings near a grammar: its own characters, the ones around them, and any Unicode.
fn near(alphabet: &'static str, len_max: usize) -> impl Strategy<Value = String> {
    let chars: Vec<char> = alphabet.chars().collect();
    prop_oneof![
        4 => proptest::collection::vec(proptest::sample::select(chars), 0..=len_max).prop_map(|c| c.into_iter().collect()),
        1 => any::<String>(),
        1 => ".{0,80}",
    ]
}

/// Agreement of a pattern with a parser (and the parser's length limit, which JSON Schema
/// states as `maxLength` beside the pattern).
fn agrees(pattern: &str, len_max: usize, text: &str, parsed: bool) -> Result<(), TestCaseError> {
    let regex = regex_lite::Regex::new(pattern).expect("a valid pattern");
    let matches = regex.is_match(text) && text.chars().count() <= len_max;
    prop_assert_eq!(matches, parsed, "pattern {} and parser disagree on {:?}", pattern, text);
    Ok(())
}

const DECIMAL_CHARS: &str = "0123456789000.1.-+e é١ ";
const ID_CHARS: &str = "abcdefghijklmnopqrstuvwxyz0123456789-_ABZ.:é jobgpurcptwrk";

proptest! {
    #![proptest_config(config())]

    #[test]
    fn money_patterns_are_the_parsers(text in near(DECIMAL_CHARS, 44)) {
        agrees(&decimal_pattern(AMOUNT_DECIMALS), 40, &text, Amount::parse(&text).is_ok())?;
        agrees(&decimal_pattern(RATE_DECIMALS), 40, &text, Rate::parse(&text).is_ok())?;
        agrees(&decimal_pattern(UNITS_DECIMALS), 40, &text, GpuMillis::parse(&text).is_ok())?;
        let _ = Rate::parse_per_hour(&text);
    }

    #[test]
    fn value_patterns_are_the_parsers(text in near(ID_CHARS, 80)) {
        agrees(Address::PATTERN, Address::LEN_MAX, &text, Address::parse(&text).is_ok())?;
        agrees(JobId::PATTERN, JobId::LEN_MAX, &text, JobId::parse(&text).is_ok())?;
        agrees(ReceiptId::PATTERN, ReceiptId::LEN_MAX, &text, ReceiptId::parse(&text).is_ok())?;
        agrees(ListingId::PATTERN, ListingId::LEN_MAX, &text, ListingId::parse(&text).is_ok())?;
        agrees(WorkerId::PATTERN, WorkerId::LEN_MAX, &text, WorkerId::parse(&text).is_ok())?;
        agrees(Region::PATTERN, Region::LEN_MAX, &text, Region::parse(&text).is_ok())?;
        agrees(ModelName::PATTERN, ModelName::LEN_MAX, &text, ModelName::parse(&text).is_ok())?;
        agrees(GpuName::PATTERN, GpuName::LEN_MAX, &text, GpuName::parse(&text).is_ok())?;
        agrees(KeyId::PATTERN, KeyId::LEN_MAX, &text, KeyId::parse(&text).is_ok())?;
    }

    #[test]
    fn addresses_from_their_own_alphabet_agree(rest in "[a-z0-9]{0,64}", prefix in prop_oneof!["ait1", "ait", "AIT1", ""]) {
        let text = format!("{prefix}{rest}");
        agrees(Address::PATTERN, Address::LEN_MAX, &text, Address::parse(&text).is_ok())?;
    }

    #[test]
    fn cuda_version_pattern_is_the_parser(text in near("0123456789..a", 7)) {
        agrees(CudaVersion::PATTERN, CudaVersion::LEN_MAX, &text, CudaVersion::parse(&text).is_ok())?;
    }

    #[test]
    fn small_grammars_never_panic(text in any::<String>()) {
        let _ = Hours::parse(&text);
        let _ = PriceStrategy::parse(&text);
        let _ = Tier::parse(&text);
        let _ = MarketConfig::from_toml(&text);
        let _ = RateCard::from_toml(&text);
    }

    #[test]
    fn job_specs_never_panic(value in json_value()) {
        if let Ok(spec) = serde_json::from_value::<JobSpec>(value) {
            if spec.validate().is_ok() {
                let _ = spec.device_bytes();
            }
        }
    }

    #[test]
    fn job_spec_samples_mutated_never_panic(sample in sample("jobs"), path in any::<proptest::sample::Index>(), with in json_value()) {
        let mutated = mutate(sample, path, with);
        if let Ok(spec) = serde_json::from_value::<JobSpec>(mutated) {
            let _ = spec.validate();
            let _ = spec.device_bytes();
        }
    }

    #[test]
    fn receipts_never_panic(path in any::<proptest::sample::Index>(), with in json_value()) {
        let mutated = mutate(receipt_sample(), path, with);
        if let Ok(receipt) = serde_json::from_value::<Receipt>(mutated) {
            let _ = receipt.body.check();
            let _ = receipt.body.canonical_bytes();
            let _ = receipt.verify(&keys());
            let _ = aitbc_core::receipt::verify_batch(std::slice::from_ref(&receipt), &keys());
        }
    }

    #[test]
    fn canonicalization_never_panics_and_is_a_fixed_point(value in json_value()) {
        if let Ok(bytes) = jcs::canonicalize(&value) {
            let again: Value = serde_json::from_slice(&bytes).expect("canonical JSON parses");
            prop_assert_eq!(jcs::canonicalize(&again).expect("canonicalizes again"), bytes);
        }
    }

    #[test]
    fn schedules_never_panic(value in json_value(), now_ms in any::<i64>()) {
        if let Ok(schedule) = serde_json::from_value::<Schedule>(value) {
            if schedule.validate().is_ok() {
                let _ = schedule.is_open(now_ms);
            }
        }
    }

    #[test]
    fn schedule_fields_never_panic(timezone in near("UTCEurope/Berlin+-0123456789", 40), days in proptest::collection::vec(near("mondaytuesdyfrihs", 12), 0..9), hours in near("0123456789:-", 14), now_ms in any::<i64>()) {
        let value = serde_json::json!({"timezone": timezone, "availability": [{"days": days, "hours": hours}], "maintenance_windows": [{"day": "sunday", "hours": hours}]});
        if let Ok(schedule) = serde_json::from_value::<Schedule>(value) {
            if schedule.validate().is_ok() {
                let _ = schedule.is_open(now_ms);
            }
        }
    }

    #[test]
    fn pricing_input_never_panics(
        params in any::<[u32; 8]>(),
        base_raw in any::<u64>(),
        units_ms in any::<u64>(),
        duration_hours in any::<u32>(),
        now_ms in any::<i64>(),
        demand in any::<u32>(),
        utilization in any::<u32>(),
        strategy in 0usize..4,
        tier in 0usize..3,
    ) {
        let params = PricingParams {
            peak_multiplier_bps: params[0],
            demand_threshold_bps: params[1],
            max_multiplier_bps: params[2],
            tier_bps: [params[3], params[4], params[5]],
            bulk_discount_bps: params[6],
            bulk_hours_min: params[7],
        };
        let _ = params.validate();
        let terms = ListingTerms { base: Rate::from_raw(base_raw), strategy: PriceStrategy::ALL[strategy], params, time_zone: chrono_tz::Asia::Kolkata, batch: None, model_prices: Default::default() };
        let request = QuoteRequest { model: None, units: GpuMillis::from_millis(units_ms), tier: [Tier::Basic, Tier::Premium, Tier::Enterprise][tier], duration_hours, batch_size: 0 };
        let signals = MarketSignals { region_demand_bps: demand, listing_utilization_bps: utilization };
        if let Ok(q) = quote(&RateCard::default(), &terms, signals, now_ms, &request, None) {
            // What a quote promises prints as a decimal that parses back to it.
            prop_assert_eq!(Rate::parse(&q.unit_price.to_string()).ok(), Some(q.unit_price));
            prop_assert_eq!(Amount::parse(&q.max_price.to_string()).ok(), Some(q.max_price));
        }
    }
}

/// Any JSON value, nested a few levels, with the strings and numbers parsers trip on.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON has no NaN or infinities", |f| f.is_finite()).prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        near(DECIMAL_CHARS, 44).prop_map(Value::String),
        prop_oneof!["vector_add", "reduction", "gemm", "kernel", "f32", "f16", "bf16", "seed", "inline", "buffer", "u32"].prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof!["kind", "n", "m", "k", "seed", "dtype", "a", "b", "grid", "block", "args", "source", "entry_point", "from", "values", "type", "value", "elements", "init", "output", "timezone", "availability", "days", "hours", "maintenance_windows", ".{0,8}"],
                inner,
                0..8,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn samples_dir(kind: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../samples").join(kind)
}

/// One of the sample files of `samples/<kind>/`, parsed.
fn sample(kind: &'static str) -> impl Strategy<Value = Value> {
    let mut files: Vec<Value> = std::fs::read_dir(samples_dir(kind))
        .expect("the samples folder")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| serde_json::from_str(&std::fs::read_to_string(&path).expect("readable")).expect("a JSON sample"))
        .collect();
    files.sort_by_key(|v| v.to_string());
    assert!(files.len() >= 4, "too few samples in samples/{kind}");
    proptest::sample::select(files)
}

fn receipt_sample() -> Value {
    serde_json::from_str(&std::fs::read_to_string(samples_dir("receipts").join("receipt.json")).expect("the sample receipt")).expect("JSON")
}

fn keys() -> KeySet {
    let key = NamedSigningKey::from_seed(KeyId::parse("miner-ed25519-2026-01").unwrap(), [7; 32]);
    let mut keys = KeySet::new();
    keys.insert(&key.public()).expect("a valid key");
    keys
}

/// `value` with one of its nodes (picked by `at`, in depth-first order) replaced by `with`.
fn mutate(mut value: Value, at: proptest::sample::Index, with: Value) -> Value {
    fn count(value: &Value) -> usize {
        1 + match value {
            Value::Array(items) => items.iter().map(count).sum(),
            Value::Object(map) => map.values().map(count).sum(),
            _ => 0,
        }
    }
    fn replace(value: &mut Value, mut target: usize, with: &mut Option<Value>) -> usize {
        if target == 0 {
            *value = with.take().expect("replaced once");
            return usize::MAX;
        }
        target -= 1;
        let children: Vec<&mut Value> = match value {
            Value::Array(items) => items.iter_mut().collect(),
            Value::Object(map) => map.values_mut().collect(),
            _ => Vec::new(),
        };
        for child in children {
            let size = count(child);
            if target < size {
                return replace(child, target, with);
            }
            target -= size;
        }
        target
    }
    let target = at.index(count(&value));
    replace(&mut value, target, &mut Some(with));
    value
}
