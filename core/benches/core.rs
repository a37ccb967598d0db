//! `cargo bench -p aitbc-core`: receipts signed/s, verified/s (one by one and in batches, both
//! including canonicalization) and quotes/s, on one core. Criterion prints each as elem/s.
//! Each Ed25519 figure has its anchor in the same run: ed25519-dalek alone on the same canonical
//! bytes. Targets (2-core CI machine, one core): signing >= 40k/s, batch verification >= 50k/s,
//! quotes >= 1M/s.

use aitbc_core::money::{GpuMillis, Rate};
use aitbc_core::pricing::{quote, ListingTerms, MarketSignals, PricingParams, QuoteRequest, RateCard, Strategy, Tier};
use aitbc_core::receipt::{verify_batch, Receipt, ReceiptBody, UnitType, RECEIPT_VERSION};
use aitbc_core::signing::{KeySet, KeySetDocument, NamedSigningKey};
use aitbc_core::values::{Address, JobId, KeyId, ListingId, ModelName, ReceiptId};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const BATCH: usize = 256;

fn body(i: usize) -> ReceiptBody {
    let units = GpuMillis::from_millis(1_000 + i as u64);
    let unit_price = Rate::parse("2.0").unwrap();
    ReceiptBody {
        version: RECEIPT_VERSION,
        receipt_id: ReceiptId::parse(&format!("rcpt-{i:08}")).unwrap(),
        job_id: JobId::parse(&format!("job-{i:08}")).unwrap(),
        gpu_id: ListingId::parse("gpu-0192f3a4b5c6").unwrap(),
        attempt: 1,
        provider: Address::parse("ait1miner00000001").unwrap(),
        client: Address::parse("ait1client0000001").unwrap(),
        units,
        unit_type: UnitType::GpuSeconds,
        unit_price,
        price: unit_price.price(units).unwrap(),
        model: Some(ModelName::parse("llama3.2").unwrap()),
        started_at: 1_737_730_800,
        completed_at: 1_737_730_803,
        prompt_tokens: None,
        completion_tokens: None,
    }
}

fn receipts(c: &mut Criterion) {
    let key = NamedSigningKey::from_seed(KeyId::parse("miner-ed25519-2026-01").unwrap(), [0x42; 32]);
    let keys = KeySet::from_document(&KeySetDocument::of(vec![key.public()])).unwrap();
    let signed: Vec<Receipt> = (0..BATCH).map(|i| body(i).sign(&key).unwrap()).collect();

    // The anchors, in the same run: ed25519-dalek alone on the same canonical bytes.
    let raw = ed25519_dalek::SigningKey::from_bytes(&[0x42; 32]);
    let message = signed[3].body.canonical_bytes().unwrap();
    let raw_signature = ed25519_dalek::Signer::sign(&raw, &message);
    let raw_public = raw.verifying_key();

    let mut group = c.benchmark_group("receipts");
    group.throughput(Throughput::Elements(1));
    group.bench_function("anchor: ed25519-dalek sign", |b| b.iter(|| black_box(ed25519_dalek::Signer::sign(&raw, black_box(&message)))));
    group.bench_function("sign (check + canonicalize + Ed25519)", |b| {
        b.iter_batched(|| body(7), |body| black_box(body.sign(&key).unwrap()), BatchSize::SmallInput)
    });
    group.bench_function("canonicalize", |b| b.iter(|| black_box(black_box(&signed[3].body).canonical_bytes().unwrap())));
    group.bench_function("anchor: ed25519-dalek verify_strict", |b| b.iter(|| raw_public.verify_strict(black_box(&message), &raw_signature).unwrap()));
    group.bench_function("verify one (check + canonicalize + Ed25519)", |b| {
        b.iter(|| black_box(&signed[3]).verify(&keys).unwrap())
    });
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("verify batch of 256 (check + canonicalize + batch Ed25519)", |b| {
        b.iter(|| {
            let results = verify_batch(black_box(&signed), &keys).unwrap();
            assert!(results.iter().all(Result::is_ok));
        })
    });
    group.finish();
}

fn quotes(c: &mut Criterion) {
    let card = RateCard::from_entries([("llama3.2", "2.0"), ("codellama", "2.5")]).unwrap();
    let terms = ListingTerms {
        base: Rate::parse_per_hour("0.05").unwrap(),
        strategy: Strategy::PeakMaximizer,
        params: PricingParams::default(),
        time_zone: chrono_tz::America::Los_Angeles,
        batch: None,
        model_prices: Default::default(),
    };
    let request = QuoteRequest { model: Some(ModelName::parse("llama3.2").unwrap()), units: GpuMillis::from_millis(2_500), tier: Tier::Premium, duration_hours: 12, batch_size: 0 };
    let signals = MarketSignals { region_demand_bps: 6_500, listing_utilization_bps: 4_000 };
    let mut group = c.benchmark_group("pricing");
    group.throughput(Throughput::Elements(1));
    for strategy in Strategy::ALL {
        let terms = ListingTerms { strategy, ..terms.clone() };
        group.bench_function(format!("quote ({strategy})"), |b| {
            let mut now_ms = 1_769_284_800_000i64;
            b.iter(|| {
                now_ms += 61_000;
                black_box(quote(&card, &terms, signals, now_ms, black_box(&request), None).unwrap())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, receipts, quotes);
criterion_main!(benches);
