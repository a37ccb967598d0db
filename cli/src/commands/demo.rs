//! `aitbc demo`: a whole marketplace run in a fresh temporary directory. A provider lists two
//! GPUs on different strategies, a client is funded, quotes and submits jobs, the local worker
//! runs them, every receipt is verified, escrow is settled and the provider paid out. The
//! summary must balance: the sum of every account equals what was deposited, or the demo fails.

use crate::local::{LocalMarket, LocalSettings, ProviderCreds, WorkerSource};
use crate::output::pairs;
use crate::{CliError, Ctx};
use aitbc_client::Client;
use aitbc_core::ledger::{AccountId, Balance};
use aitbc_core::money::Amount;
use aitbc_core::receipt::Receipt;
use aitbc_core::signing::NamedSigningKey;
use aitbc_core::values::{Address, KeyId};
use aitbc_market::settlement::NoProgress;
use aitbc_scheduler::{run_task, Scheduler, Task, TaskReport};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Jobs one demo submits, at most.
pub const DEMO_JOBS_MAX: usize = 1_000;
/// The demo gives up waiting for its jobs after this long.
pub const DEMO_WAIT_S_MAX: u64 = 300;
/// What the client deposits.
const DEPOSIT: &str = "1000";
/// The language model the demo asks, and what it asks.
const DEMO_MODEL: &str = crate::commands::models::DEFAULT_MODEL;
/// How long the demo waits for the worker to report its model, at most.
const DEMO_MODEL_WAIT_S_MAX: u64 = 30;
const DEMO_SYSTEM_PROMPT: &str = "Answer concisely.";
const DEMO_PROMPTS: [&str; 3] = ["What is the capital of France?", "Write a haiku about GPUs.", "What is 12 times 12?"];

#[derive(Args)]
pub struct DemoArgs {
    /// How many jobs to submit.
    #[arg(long, default_value_t = 36)]
    jobs: usize,
    /// Keep the temporary data directory (its path is printed).
    #[arg(long)]
    keep: bool,
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len}").expect("a valid template").progress_chars("=> "));
    pb.set_message(what.to_string());
    pb
}

fn fail(what: impl std::fmt::Display) -> CliError {
    CliError::Failed(format!("demo: {what}"))
}

pub async fn run(args: DemoArgs, ctx: Ctx) -> Result<(), CliError> {
    if args.jobs == 0 || args.jobs > DEMO_JOBS_MAX {
        return Err(CliError::Usage(format!("--jobs must be 1..={DEMO_JOBS_MAX}")));
    }
    crate::commands::up::init_logs();
    let dir = tempfile::Builder::new().prefix("aitbc-demo-").tempdir().map_err(fail)?;
    let mut settings = LocalSettings::load()?;
    // The demo settles and pays out itself, once, at the end; the sweeper keeps running.
    settings.settle_interval_s = 86_400;
    settings.payout_interval_s = 86_400;
    settings.sweep_interval_s = 1;

    let provider_key = NamedSigningKey::generate(KeyId::parse("demo-provider-ed25519-1").expect("valid"));
    let models = crate::local::local_models(&ctx.home).await?;
    let (local, provider) = start_with_provider(&settings, dir.path(), "127.0.0.1:0", &provider_key, models).await?;
    let result = demo(&args, &ctx, &local, &provider).await;
    local.shutdown().await;
    if args.keep {
        println!("data kept in {}", dir.keep().display());
    }
    result
}

/// Starts the marketplace, opens the provider's account, and restarts it with the local worker
/// serving that provider (the restart also shows the data surviving one).
async fn start_with_provider(settings: &LocalSettings, dir: &std::path::Path, listen: &str, key: &NamedSigningKey, models: std::sync::Arc<aitbc_worker::models::Models>) -> Result<(LocalMarket, ProviderCreds), CliError> {
    let first = LocalMarket::start(settings, dir, listen, WorkerSource::Home(dir.join("no-home")), models.clone()).await?;
    let anon = Client::new(&first.url, None);
    let opened = anon.open_account("provider").await?;
    let creds = ProviderCreds {
        address: opened["address"].as_str().ok_or_else(|| fail("no address"))?.to_string(),
        api_key: opened["api_key"].as_str().ok_or_else(|| fail("no api key"))?.to_string(),
        key: key.clone(),
    };
    anon.with_key(&creds.api_key).register_key(&key.public()).await?;
    first.shutdown().await;
    let local = LocalMarket::start(settings, dir, listen, WorkerSource::Fixed(creds.clone()), models).await?;
    Ok((local, creds))
}

async fn demo(args: &DemoArgs, ctx: &Ctx, local: &LocalMarket, creds: &ProviderCreds) -> Result<(), CliError> {
    let started = Instant::now();
    let provider = Client::new(&local.url, Some(creds.api_key.clone()));
    let provider_address = creds.address.clone();
    // The narrative goes to stderr under --json, so stdout is one JSON document.
    let say = |line: String| if ctx.json { eprintln!("{line}") } else { println!("{line}") };
    say(format!("aitbc demo: marketplace at {} (data in {})", local.url, local.data_dir.display()));

    // Two GPUs on different strategies.
    let mut gpus = Vec::new();
    for (name, strategy, price) in [("Demo-GPU-A", "market-balance", "0.05"), ("Demo-GPU-B", "peak-maximizer", "0.08")] {
        let l = provider
            .create_listing(&json!({
                "name": name, "memory_gib": 24, "cuda_version": "12.1", "base_price": price, "region": "us-west",
                "count": 2, "models": ["llama3.2", "llama3.2:1b", "codellama"], "strategy": strategy
            }))
            .await?;
        say(format!("provider {provider_address} listed {} ({name}, {strategy}, {price} AITBC/GPU-hour)", l["gpu_id"].as_str().unwrap_or("?")));
        gpus.push(l["gpu_id"].as_str().unwrap_or_default().to_string());
        provider.listing_heartbeat(&gpus[gpus.len() - 1], "wrk-demo-setup", None).await?;
    }

    // A funded client.
    let anon = Client::new(&local.url, None);
    let opened = anon.open_account("client").await?;
    let client_address = opened["address"].as_str().ok_or_else(|| fail("no client address"))?.to_string();
    let client = anon.with_key(opened["api_key"].as_str().unwrap_or_default());
    client.deposit(&client_address, DEPOSIT, "demo-deposit").await?;
    say(format!("client {client_address} deposited {DEPOSIT} AITBC"));

    // Quote and submit.
    let specs = [
        json!({"kind": "vector_add", "n": 65536, "seed": 1}),
        json!({"kind": "reduction", "n": 1000000, "seed": 2}),
        json!({"kind": "gemm", "m": 256, "n": 256, "k": 256, "dtype": "bf16", "seed": 3, "return_values": 4}),
    ];
    let models = [Some("llama3.2"), Some("llama3.2:1b"), Some("codellama"), None];
    let submit_bar = bar(args.jobs as u64, "submitted");
    let mut job_ids = Vec::with_capacity(args.jobs);
    let mut held_total = Amount::ZERO;
    for i in 0..args.jobs {
        let mut q = json!({ "units": format!("{}", 2 + i % 4), "gpu_id": gpus[i % gpus.len()] });
        if let Some(m) = models[i % models.len()] {
            q["model"] = json!(m);
        }
        let quote = client.quote(&q).await?;
        let job = client.submit_job(&json!({ "quote": quote, "spec": specs[i % specs.len()] }), &format!("demo-job-{i}")).await?;
        held_total = held_total.checked_add(Amount::parse(job["max_price"].as_str().unwrap_or("0")).map_err(fail)?).map_err(fail)?;
        job_ids.push(job["job_id"].as_str().unwrap_or_default().to_string());
        submit_bar.inc(1);
    }
    // A few questions for the language model the local worker serves (when it has one: the
    // heartbeats say; `AITBC_MODELS=none` runs the demo without).
    // The worker reports its models in its first heartbeat, seconds after the listings appear.
    let serves = |l: &Value| l["loaded_models"].as_array().is_some_and(|m| m.iter().any(|m| m == DEMO_MODEL));
    let model_deadline = Instant::now() + Duration::from_secs(DEMO_MODEL_WAIT_S_MAX);
    let mut serves_model = false;
    while local.serves_models && !serves_model && Instant::now() < model_deadline {
        serves_model = serves(&provider.listing(&gpus[0]).await?);
        if !serves_model {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut prompts = Vec::new();
    if serves_model {
        for (i, question) in DEMO_PROMPTS.iter().enumerate() {
            // A short system prompt of ours: under the template's default one this 135M model
            // (in llama.cpp too) wanders off the question.
            let messages = json!([{"role": "system", "content": DEMO_SYSTEM_PROMPT}, {"role": "user", "content": question}]);
            let spec = json!({"kind": "text_generation", "model": DEMO_MODEL, "messages": messages, "max_tokens": 48});
            let body = json!({ "units": (aitbc_core::jobspec::JOB_TIMEOUT_MS_DEFAULT / 1_000).to_string(), "region": "us-west", "spec": spec });
            let job = client.submit_job(&body, &format!("demo-prompt-{i}")).await?;
            held_total = held_total.checked_add(Amount::parse(job["max_price"].as_str().unwrap_or("0")).map_err(fail)?).map_err(fail)?;
            let id = job["job_id"].as_str().unwrap_or_default().to_string();
            prompts.push((*question, id.clone()));
            job_ids.push(id);
        }
    } else {
        say(format!("no listing serves {DEMO_MODEL}: the demo runs compute jobs only"));
    }
    submit_bar.finish();

    // Let the worker run them.
    let run_bar = bar(args.jobs as u64, "completed");
    let deadline = Instant::now() + Duration::from_secs(DEMO_WAIT_S_MAX);
    let mut states: BTreeMap<String, usize>;
    loop {
        states = BTreeMap::new();
        for id in &job_ids {
            let job = client.job(id).await?;
            *states.entry(job["status"]["state"].as_str().unwrap_or("?").to_string()).or_default() += 1;
        }
        let done = states.iter().filter(|(s, _)| !matches!(s.as_str(), "queued" | "claimed" | "running")).map(|(_, n)| n).sum::<usize>();
        run_bar.set_position(done as u64);
        if done == job_ids.len() {
            break;
        }
        if Instant::now() > deadline {
            run_bar.abandon();
            return Err(fail(format!("jobs still running after {DEMO_WAIT_S_MAX} s: {states:?}")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    run_bar.finish();
    for (question, id) in &prompts {
        let result: Value = client.get(&format!("/v1/jobs/{id}/result")).await?;
        let answer = result["output"]["text"]["text"].as_str().map(str::trim).unwrap_or("(no answer)");
        say(format!("asked {DEMO_MODEL} {question:?}: {}", answer.replace('\n', " ")));
    }

    // Verify every receipt against the registry's keys.
    let keys = anon.keys().await?;
    let provider_keys = keys.provider_keys().map_err(fail)?;
    let market_keys = keys.marketplace_keys().map_err(fail)?.ok_or_else(|| fail("the registry names no marketplace key"))?;
    let page: Value = client.get(&format!("/v1/receipts?client={client_address}&limit=200")).await?;
    let receipts: Vec<Receipt> = serde_json::from_value(page["items"].clone()).map_err(fail)?;
    let verified = receipts.iter().filter(|r| r.verify_countersigned(&provider_keys, &market_keys).is_ok()).count();
    let posted_total = Amount::checked_sum(receipts.iter().map(|r| r.body.price)).map_err(fail)?;

    // Settle escrow, then pay the provider out.
    let mut scheduler = Scheduler::with_market(local.market.clone(), None);
    scheduler.payout.threshold = Amount::from_raw(1);
    // Every job has ended and its answer came back: no completion is in flight, so no grace.
    scheduler.settle.grace_ms = 0;
    let settled = match run_task(&scheduler, Task::Settle, &NoProgress).await.map_err(fail)? {
        TaskReport::Settle(r) => r,
        _ => unreachable!("settle reports settlement"),
    };
    let paid = match run_task(&scheduler, Task::Payout, &NoProgress).await.map_err(fail)? {
        TaskReport::Payout { report, .. } => report,
        _ => unreachable!("payout reports payouts"),
    };

    // Balances, from the ledger itself.
    let m = &local.market;
    let client_addr = Address::parse(&client_address).map_err(fail)?;
    let provider_addr = Address::parse(&provider_address).map_err(fail)?;
    let accounts = [
        ("client wallet", AccountId::wallet(&client_addr)),
        ("provider wallet", AccountId::wallet(&provider_addr)),
        ("provider earnings", AccountId::earnings(&provider_addr)),
        ("platform fees", AccountId::fee(&m.platform)),
    ];
    let mut balances: Vec<(&str, Balance)> = Vec::new();
    for (name, id) in &accounts {
        balances.push((name, m.account(id).await.map_err(fail)?.1));
    }
    let total: i128 = balances.iter().map(|(_, b)| i128::from(b.available.raw()) + i128::from(b.held.raw())).sum();
    let deposited = i128::from(Amount::parse(DEPOSIT).map_err(fail)?.raw());
    let completed = states.get("completed").copied().unwrap_or(0) + states.get("settled").copied().unwrap_or(0);
    let fee = balances[3].1.available;
    let released = held_total.checked_sub(posted_total).map_err(fail)?;
    let ok_conservation = total == deposited;
    let ok_receipts = verified == receipts.len() && receipts.len() == completed;
    let ok_settled = balances[0].1.held.is_zero();

    let summary = json!({
        "jobs": states, "receipts": receipts.len(), "receipts_verified": verified,
        "held": held_total, "posted": posted_total, "released": released,
        "settled_receipts": settled.receipts, "fees": fee, "paid_out": paid.paid_total,
        "balances": balances.iter().map(|(n, b)| (n.to_string(), json!({"available": b.available, "held": b.held}))).collect::<BTreeMap<_, _>>(),
        "conservation": { "sum_of_accounts": Amount::from_raw(total.max(0) as u64), "deposited": DEPOSIT, "holds": ok_conservation },
        "elapsed_s": started.elapsed().as_secs_f64(),
    });
    if ctx.json {
        crate::output::json(&summary);
    } else {
        println!();
        println!("Summary");
        let jobs_line = states.iter().map(|(s, n)| format!("{n} {s}")).collect::<Vec<_>>().join(", ");
        let mut lines = vec![
            ("Jobs", jobs_line),
            ("Receipts verified", format!("{verified} of {} (provider signature and marketplace countersignature)", receipts.len())),
            ("Held in escrow", format!("{held_total} AITBC")),
            ("Posted to provider", format!("{posted_total} AITBC ({} receipts settled)", settled.receipts)),
            ("Released to client", format!("{released} AITBC")),
            ("Platform fees", format!("{fee} AITBC (2.5%, rounded down per job)")),
            ("Paid out", format!("{} AITBC to {} provider(s)", paid.paid_total, paid.paid)),
        ];
        for (name, b) in &balances {
            lines.push((name, format!("{} AITBC available, {} AITBC held", b.available, b.held)));
        }
        lines.push(("Sum of accounts", format!("{} AITBC = {DEPOSIT} AITBC deposited: {}", Amount::from_raw(total.max(0) as u64), if ok_conservation { "balanced" } else { "NOT BALANCED" })));
        lines.push(("Elapsed", format!("{:.1} s", started.elapsed().as_secs_f64())));
        pairs(&lines);
    }
    if !ok_conservation {
        return Err(fail(format!("the accounts sum to {total} nano, not the {deposited} deposited")));
    }
    if !ok_receipts {
        return Err(fail(format!("{verified} of {} receipts verified for {completed} completed jobs", receipts.len())));
    }
    if !ok_settled {
        return Err(fail("escrow still holds funds after settlement"));
    }
    Ok(())
}
