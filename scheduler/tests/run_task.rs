//! The scheduler's entry points on the embedded store: `run_task` for each task, the
//! EventBridge handler without Lambda, and the command line binary.

use aitbc_core::ledger::AccountId;
use aitbc_core::money::Amount;
use aitbc_core::signing::NamedSigningKey;
use aitbc_core::values::{KeyId, TransferId, WorkerId};
use aitbc_market::auth::Role;
use aitbc_market::jobs::Completion;
use aitbc_market::payouts::PayoutOptions;
use aitbc_market::settlement::{NoProgress, SettleOptions};
use aitbc_scheduler::{handle_event, run_task, Backend, Config, Scheduler, Task, TaskReport};
use serde_json::json;

fn config(dir: &std::path::Path) -> Config {
    Config {
        backend: Backend::Sqlite,
        db_path: dir.join("data").join("aitbc.db"),
        report_dir: Some(dir.join("reports")),
        payout: PayoutOptions { threshold: Amount::parse("1").unwrap() },
        // The tests await their completions: no grace is needed.
        settle: SettleOptions { grace_ms: 0, ..SettleOptions::default() },
    }
}

/// A provider, a client and one completed job of 2 GPU-seconds at 1.6 (a hold of 4).
async fn one_completed_job(scheduler: &Scheduler) -> aitbc_core::values::Address {
    let m = &scheduler.market;
    let provider = m.authenticate(&m.open_account_with_key(None, Role::Provider, None).await.unwrap().api_key).await.unwrap();
    let key = NamedSigningKey::from_seed(KeyId::parse("prov-sched").unwrap(), [9; 32]);
    m.register_signing_key(&provider, key.public()).await.unwrap();
    let new = serde_json::from_value(json!({
        "name": "My-GPU", "memory_gib": 24, "cuda_version": "12.1", "base_price": "0.05", "region": "us-west", "models": ["llama3.2"]
    }))
    .unwrap();
    let listing = m.create_listing(&provider, new).await.unwrap();
    let worker = WorkerId::parse("wrk-1").unwrap();
    m.heartbeat(&provider, &listing.gpu_id, &worker, None).await.unwrap();
    let client = m.authenticate(&m.open_account_with_key(None, Role::Client, None).await.unwrap().api_key).await.unwrap();
    m.deposit(&client, &client.address, Amount::parse("10").unwrap(), TransferId::generate()).await.unwrap();
    let submit = serde_json::from_value(json!({
        "model": "llama3.2", "units": "2.5", "region": "us-west", "spec": {"kind": "vector_add", "n": 1024, "seed": 1}
    }))
    .unwrap();
    let job = m.submit_job(&client, submit, "k").await.unwrap();
    let job = m.claim_job(&provider, &job.job_id, &worker, None).await.unwrap();
    let now_s = m.now_ms() / 1_000;
    let completion = Completion::signed(&job, &key, &worker, 2_000, now_s, now_s + 2);
    m.complete_job(&provider, &job.job_id, completion).await.unwrap();
    provider.address
}

#[test]
fn events_name_their_task() {
    assert_eq!(Task::from_event(&json!({"detail": {"task": "payout"}})).unwrap(), Task::Payout);
    let rule = json!({"detail-type": "Scheduled Event", "detail": {}, "resources": ["arn:aws:events:us-east-1:123456789012:rule/aitbc-settle"]});
    assert_eq!(Task::from_event(&rule).unwrap(), Task::Settle);
    let sweep = json!({"resources": ["arn:aws:events:us-east-1:1:rule/aitbc-sweep-every-minute"]});
    assert_eq!(Task::from_event(&sweep).unwrap(), Task::Sweep);
    // The detail wins over the resources; unknown or ambiguous names are refused.
    let both = json!({"detail": {"task": "sweep"}, "resources": ["arn:...:rule/aitbc-settle"]});
    assert_eq!(Task::from_event(&both).unwrap(), Task::Sweep);
    assert!(Task::from_event(&json!({"detail": {"task": "dance"}})).is_err());
    assert!(Task::from_event(&json!({"resources": ["arn:...:rule/settle-and-payout"]})).is_err());
    assert!(Task::from_event(&json!({})).is_err());
}

#[tokio::test]
async fn each_task_runs_once_through_run_task_and_the_event_handler() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = Scheduler::open(&config(dir.path())).await.unwrap();
    assert!(dir.path().join("data/aitbc.db").exists(), "the database is the flag's file");
    let provider = one_completed_job(&scheduler).await;

    let TaskReport::Settle(settled) = run_task(&scheduler, Task::Settle, &NoProgress).await.unwrap() else { panic!("a settle report") };
    assert_eq!((settled.batches, settled.receipts, settled.fee_total), (1, 1, Amount::parse("0.08").unwrap()));
    let earnings = scheduler.market.account(&AccountId::earnings(&provider)).await.unwrap().1;
    assert_eq!(earnings.available, Amount::parse("3.12").unwrap());

    let TaskReport::Payout { report, files } = run_task(&scheduler, Task::Payout, &NoProgress).await.unwrap() else { panic!("a payout report") };
    assert_eq!((report.paid, report.paid_total), (1, Amount::parse("3.12").unwrap()));
    assert_eq!(files.len(), 2);
    let csv = std::fs::read_to_string(&files[0]).unwrap();
    assert!(csv.starts_with("day,provider,payout_id,transfer_id,amount,status\n"), "{csv}");
    assert!(csv.contains(&format!("{provider},pay-")) && csv.trim_end().ends_with(",3.12,paid"), "{csv}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&files[1]).unwrap()).unwrap();
    assert_eq!(json["paid_total"], "3.12");

    // The Lambda's handler: the same tasks, named by the event, answered as JSON.
    let answer = handle_event(&scheduler, &json!({"detail": {"task": "sweep"}}), &NoProgress).await.unwrap();
    assert_eq!(answer["task"], "sweep");
    assert_eq!(answer["expired"], 0);
    let answer = handle_event(&scheduler, &json!({"resources": ["arn:aws:events:us-east-1:1:rule/aitbc-payout"]}), &NoProgress).await.unwrap();
    assert_eq!((answer["task"].as_str(), answer["paid"].as_u64(), answer["already_paid"].as_u64()), (Some("payout"), Some(0), Some(1)));
    let answer = handle_event(&scheduler, &json!({"detail": {"task": "settle"}}), &NoProgress).await.unwrap();
    assert_eq!((answer["task"].as_str(), answer["receipts"].as_u64()), (Some("settle"), Some(0)));
    assert!(handle_event(&scheduler, &json!({"detail": {}}), &NoProgress).await.is_err());
}

#[test]
fn the_command_line_runs_each_task_on_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_aitbc-scheduler"))
            .args(["--data-dir", dir.path().to_str().unwrap()])
            .args(args)
            .env_remove("AITBC_BACKEND")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        stdout.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).collect::<Vec<_>>()
    };
    let settle = run(&["settle"]);
    assert_eq!((settle.len(), settle[0]["task"].as_str(), settle[0]["receipts"].as_u64()), (1, Some("settle"), Some(0)));
    assert!(dir.path().join("aitbc.db").exists());
    let sweeps = run(&["sweep", "--every", "1", "--runs", "2"]);
    assert_eq!(sweeps.len(), 2, "two runs, one report each");
    let reports = dir.path().join("reports");
    let payout = run(&["payout", "--report-dir", reports.to_str().unwrap(), "--payout-threshold", "2.5"]);
    assert_eq!((payout[0]["task"].as_str(), payout[0]["threshold"].as_str()), (Some("payout"), Some("2.5")));
    assert_eq!(std::fs::read_dir(&reports).unwrap().count(), 2, "a CSV and a JSON report");
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_aitbc-scheduler")).args(["payout", "--payout-threshold", "0"]).output().unwrap();
    assert!(!bad.status.success());
}
