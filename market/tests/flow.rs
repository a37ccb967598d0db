//! The marketplace's flows on the embedded SQLite store: a provider lists a GPU, a client pays
//! for a job from escrow, a worker claims and completes it with a signed receipt; and the ways
//! that must fail (late, duplicate or foreign completions, overdrafts, cancelled jobs).

use aitbc_core::jobspec::JobSpec;
use aitbc_core::ledger::AccountId;
use aitbc_core::money::Amount;
use aitbc_core::signing::NamedSigningKey;
use aitbc_core::values::{GpuMemoryGib, GpuName, CudaVersion, TransferId, WorkerId};
use aitbc_market::auth::Role;
use aitbc_market::registry::{NewListing, Sla};
use aitbc_market::{Clock, MarketError};
use aitbc_core::job::JobState;

mod common;

use common::{completion as receipt_for, funded_client, provider, submit, world, START_MS};

#[tokio::test]
async fn a_job_is_held_claimed_completed_and_receipted() {
    let w = world().await;
    let m = &w.market;
    let p = provider(m).await;
    let client = funded_client(m, "100").await;

    let job = m.submit_job(&client, submit("2.5"), "key-1").await.unwrap();
    assert_eq!(job.status.state, JobState::Queued);
    // llama3.2's card rate 2.0 x market-balance 0.8 (the region is idle) = 1.6 per GPU-second.
    assert_eq!(job.unit_price, aitbc_core::money::Rate::parse("1.6").unwrap());
    assert_eq!(job.max_price, Amount::parse("4").unwrap(), "2.5 units at 1.6");
    let wallet = m.account(&AccountId::wallet(&client.address)).await.unwrap().1;
    assert_eq!((wallet.available, wallet.held), (Amount::parse("96").unwrap(), Amount::parse("4").unwrap()));

    // The same idempotency key gives the same job and holds nothing more.
    let again = m.submit_job(&client, submit("2.5"), "key-1").await.unwrap();
    assert_eq!(again.job_id, job.job_id);
    assert_eq!(m.account(&AccountId::wallet(&client.address)).await.unwrap().1.held, Amount::parse("4").unwrap());

    // The message is on the listing's queue; the retry sent it again (a retry cannot know whether
    // the first send happened), and both name the one job, whose claim succeeds once.
    let msgs = m.queue.receive(&p.listing.queue, 10, std::time::Duration::ZERO, std::time::Duration::from_secs(30)).await.unwrap();
    assert_eq!(msgs.len(), 2);
    assert!(msgs.iter().all(|msg| msg.body.contains(job.job_id.as_str())));

    let claimed = m.claim_job(&p.who, &job.job_id, &p.worker, None).await.unwrap();
    assert_eq!((claimed.status.state, claimed.status.attempt), (JobState::Claimed, 1));
    // A second claim (a duplicate delivery) is refused.
    let other = WorkerId::parse("wrk-2").unwrap();
    assert!(matches!(m.claim_job(&p.who, &job.job_id, &other, None).await, Err(MarketError::Conflict(_))));

    w.clock.advance_ms(3_000);
    let now_s = START_MS / 1_000;
    let completion = receipt_for(&claimed, &p, 2_000, now_s, now_s + 3);
    // Another worker of the same provider does not hold the lease.
    let mut foreign = receipt_for(&claimed, &p, 2_000, now_s, now_s + 3);
    foreign.worker_id = other;
    assert!(matches!(m.complete_job(&p.who, &job.job_id, foreign).await, Err(MarketError::Forbidden(_))));

    let (done, receipt) = m.complete_job(&p.who, &job.job_id, completion.clone()).await.unwrap();
    assert_eq!(done.status.state, JobState::Completed);
    assert!(receipt.countersignature.is_some());
    assert_eq!(receipt.body.price, Amount::parse("3.2").unwrap(), "2 GPU-seconds at 1.6");
    let verification = m.verify_receipt(&receipt).await.unwrap();
    assert!(verification.valid, "{verification:?}");
    // A duplicate completion changes nothing.
    assert!(m.complete_job(&p.who, &job.job_id, completion).await.is_err());
    let (list, _) = m.list_receipts(&client, aitbc_market::receipts::ReceiptOwner::Client(client.address.clone()), 10, None).await.unwrap();
    assert_eq!(list.len(), 1);
    let view = m.listing_view(&m.listing_item(&p.listing.gpu_id).await.unwrap()).unwrap();
    assert_eq!((view.active_jobs, view.completed_jobs, view.earned), (0, 1, Amount::parse("3.2").unwrap()));
}

#[tokio::test]
async fn receipts_that_do_not_fit_the_job_are_refused() {
    let w = world().await;
    let m = &w.market;
    let p = provider(m).await;
    let client = funded_client(m, "100").await;
    let job = m.submit_job(&client, submit("2.5"), "k").await.unwrap();
    let claimed = m.claim_job(&p.who, &job.job_id, &p.worker, None).await.unwrap();
    let now_s = START_MS / 1_000;
    let mut too_many = receipt_for(&claimed, &p, 2_600, now_s, now_s + 3);
    assert!(matches!(m.complete_job(&p.who, &job.job_id, too_many.clone()).await, Err(MarketError::Invalid { .. })));
    // Signed by a key the provider never registered.
    too_many = receipt_for(&claimed, &p, 1_000, now_s, now_s + 3);
    let stranger = NamedSigningKey::from_seed(p.key.key_id.clone(), [77; 32]);
    too_many.receipt = too_many.receipt.body.clone().sign(&stranger).unwrap();
    let err = m.complete_job(&p.who, &job.job_id, too_many).await.unwrap_err();
    assert!(matches!(&err, MarketError::Invalid { field, .. } if field == "receipt"), "{err:?}");
    // Timestamps before the claim.
    let early = receipt_for(&claimed, &p, 1_000, now_s - 3_600, now_s - 3_590);
    assert!(m.complete_job(&p.who, &job.job_id, early).await.is_err());
    // Another provider cannot touch the job at all.
    let intruder = provider(m).await;
    let theirs = receipt_for(&claimed, &intruder, 1_000, now_s, now_s + 1);
    assert!(matches!(m.complete_job(&intruder.who, &job.job_id, theirs).await, Err(MarketError::Forbidden(_))));
    let still = m.get_job(&client, &job.job_id).await.unwrap();
    assert_eq!(still.status.state, JobState::Claimed);
}

#[tokio::test]
async fn holds_cannot_overdraw_and_cancellation_voids_them() {
    let w = world().await;
    let m = &w.market;
    let _p = provider(m).await;
    let client = funded_client(m, "6").await; // one 4 AITBC hold fits, a second does not
    let job = m.submit_job(&client, submit("2.5"), "a").await.unwrap();
    let err = m.submit_job(&client, submit("2.5"), "b").await.unwrap_err();
    assert!(matches!(err, MarketError::InsufficientFunds(_)), "{err:?}");
    let wallet = AccountId::wallet(&client.address);
    assert_eq!(m.account(&wallet).await.unwrap().1.held, Amount::parse("4").unwrap());
    let cancelled = m.cancel_job(&client, &job.job_id).await.unwrap();
    assert_eq!(cancelled.status.state, JobState::Cancelled);
    let balance = m.account(&wallet).await.unwrap().1;
    assert_eq!((balance.available, balance.held), (Amount::parse("6").unwrap(), Amount::ZERO));
    assert!(matches!(m.cancel_job(&client, &job.job_id).await, Err(MarketError::Conflict(_))));
}

#[tokio::test]
async fn a_spending_limit_bounds_what_a_client_holds_at_once() {
    let w = world().await;
    let m = &w.market;
    let _p = provider(m).await;
    let opened = m.open_account_with_key(None, Role::Client, Some(Amount::parse("5").unwrap())).await.unwrap();
    let limited = m.authenticate(&opened.api_key).await.unwrap();
    m.deposit(&limited, &limited.address, Amount::parse("100").unwrap(), TransferId::generate()).await.unwrap();
    let wallet = AccountId::wallet(&limited.address);
    // One 4 AITBC hold fits under 5; a second would hold 8 and is refused, holding nothing.
    let first = m.submit_job(&limited, submit("2.5"), "a").await.unwrap();
    let err = m.submit_job(&limited, submit("2.5"), "b").await.unwrap_err();
    assert!(matches!(err, MarketError::SpendingLimit(_)), "{err:?}");
    assert_eq!(m.account(&wallet).await.unwrap().1.held, Amount::parse("4").unwrap());
    let (jobs, _) = m.list_jobs(&limited, 10, None).await.unwrap();
    assert_eq!(jobs.len(), 1, "the refused job was not written");
    // The limit bounds what is held now: once the first hold is voided, another job fits.
    m.cancel_job(&limited, &first.job_id).await.unwrap();
    m.submit_job(&limited, submit("2.5"), "c").await.unwrap();
    // A client without a limit is bounded only by its balance.
    let free = funded_client(m, "100").await;
    for key in ["a", "b", "c"] {
        m.submit_job(&free, submit("2.5"), key).await.unwrap();
    }
}

#[tokio::test]
async fn failures_requeue_until_attempts_run_out_then_void() {
    let w = world().await;
    let m = &w.market;
    let p = provider(m).await;
    let client = funded_client(m, "10").await;
    let job = m.submit_job(&client, submit("1"), "a").await.unwrap();
    for attempt in 1..=3 {
        m.claim_job(&p.who, &job.job_id, &p.worker, None).await.unwrap();
        let after = m.fail_job(&p.who, &job.job_id, &p.worker, "device lost".into(), true).await.unwrap();
        let expected = if attempt < 3 { JobState::Queued } else { JobState::Failed };
        assert_eq!(after.status.state, expected, "attempt {attempt}");
    }
    let balance = m.account(&AccountId::wallet(&client.address)).await.unwrap().1;
    assert_eq!((balance.available, balance.held), (Amount::parse("10").unwrap(), Amount::ZERO));
    let view = m.listing_view(&m.listing_item(&p.listing.gpu_id).await.unwrap()).unwrap();
    assert_eq!(view.active_jobs, 0);
}

#[tokio::test]
async fn providers_touch_only_their_own_listings() {
    let w = world().await;
    let m = &w.market;
    let p = provider(m).await;
    let q = provider(m).await;
    let patch = serde_json::from_value(serde_json::json!({"strategy": "peak-maximizer"})).unwrap();
    assert!(matches!(m.update_listing(&q.who, &p.listing.gpu_id, patch).await, Err(MarketError::Forbidden(_))));
    let client = funded_client(m, "1").await;
    let patch = serde_json::from_value(serde_json::json!({"strategy": "peak-maximizer"})).unwrap();
    assert!(matches!(m.update_listing(&client, &p.listing.gpu_id, patch).await, Err(MarketError::Forbidden(_))));
    let patch = serde_json::from_value(serde_json::json!({"strategy": "peak-maximizer"})).unwrap();
    let updated = m.update_listing(&p.who, &p.listing.gpu_id, patch).await.unwrap();
    assert_eq!(updated.strategy.name(), "peak-maximizer");
    assert!(matches!(m.heartbeat(&q.who, &p.listing.gpu_id, &q.worker, None).await, Err(MarketError::Forbidden(_))));
    // Bad listings are refused and nothing is stored.
    let bad = NewListing {
        name: GpuName::parse("x").unwrap(),
        memory_gib: GpuMemoryGib::new(24).unwrap(),
        cuda_version: CudaVersion::parse("12.1").unwrap(),
        base_price: Amount::ZERO,
        region: "us-west".into(),
        count: 1,
        models: vec![],
        kinds: vec![aitbc_core::jobspec::JobKind::Gemm],
        strategy: Default::default(),
        params: Default::default(),
        availability: None,
        max_concurrent_jobs: None,
        sla: Sla::default(),
        queue_config: Default::default(),
        batch: None,
        model_prices: Default::default(),
        load_balancing: None,
    };
    assert!(matches!(m.create_listing(&p.who, bad.clone()).await, Err(MarketError::Invalid { .. })));
    let mars = NewListing { base_price: Amount::parse("1").unwrap(), region: "mars-north".into(), ..bad };
    assert!(matches!(m.create_listing(&p.who, mars).await, Err(MarketError::Invalid { .. })));
    let filter = aitbc_market::registry::ListingFilter { provider: Some(p.who.address.clone()), limit: 10, ..Default::default() };
    assert_eq!(m.list_listings(filter).await.unwrap().0.len(), 1);
}

#[tokio::test]
async fn a_spec_the_listing_cannot_run_is_refused_before_any_hold() {
    let w = world().await;
    let m = &w.market;
    let _p = provider(m).await;
    let client = funded_client(m, "10").await;
    let mut s = submit("1");
    s.spec = JobSpec::VectorAdd { n: 0, seed: 1 };
    assert!(matches!(m.submit_job(&client, s, "x").await, Err(MarketError::Invalid { .. })));
    let mut s = submit("1");
    s.spec = serde_json::from_value(serde_json::json!({"kind": "kernel", "source": "x", "entry_point": "k", "grid": [1,1,1], "block": [1,1,1], "args": [{"type": "u32", "value": 1}], "seed": 1})).unwrap();
    let err = m.submit_job(&client, s, "y").await.unwrap_err();
    assert!(matches!(err, MarketError::NoCapacity(_) | MarketError::Invalid { .. }), "{err:?}");
    assert_eq!(m.account(&AccountId::wallet(&client.address)).await.unwrap().1.held, Amount::ZERO);
}

#[tokio::test]
async fn a_lapsed_lease_is_taken_over_by_the_next_claim() {
    let w = world().await;
    let m = &w.market;
    let p = provider(m).await;
    let client = funded_client(m, "10").await;
    let job = m.submit_job(&client, submit("1"), "a").await.unwrap();
    m.claim_job(&p.who, &job.job_id, &p.worker, Some(5_000)).await.unwrap();
    let second = WorkerId::parse("wrk-2").unwrap();
    // While the lease lives, another worker cannot take the job.
    assert!(matches!(m.claim_job(&p.who, &job.job_id, &second, None).await, Err(MarketError::Conflict(_))));
    w.clock.advance_ms(5_000);
    let taken = m.claim_job(&p.who, &job.job_id, &second, None).await.unwrap();
    assert_eq!((taken.status.attempt, taken.status.lease.as_ref().unwrap().holder.clone()), (2, second.clone()));
    let view = m.listing_view(&m.listing_item(&p.listing.gpu_id).await.unwrap()).unwrap();
    assert_eq!(view.active_jobs, 1, "the takeover keeps one active job");
    // The first worker, back from the dead, cannot complete.
    let now_s = w.clock.now_ms() / 1_000;
    let late = receipt_for(&taken, &p, 500, now_s, now_s);
    assert!(matches!(m.complete_job(&p.who, &job.job_id, late).await, Err(MarketError::Forbidden(_))));
}
