//! `aitbc job submit|batch|status|result|cancel|rate|list`.

use crate::home::read_bounded;
use crate::output::{cell, pairs, table};
use crate::{CliError, Ctx};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Args)]
#[command(after_help = "Examples:\n  aitbc job submit --model smollm2:135m --prompt \"What is the capital of France?\"\n  aitbc job submit --model smollm2:135m --messages chat.json --max-tokens 64\n  aitbc job submit --spec samples/jobs/vector_add.json --units 5 --region us-west\n  aitbc job status job-0192...\n  aitbc job result job-0192...")]
pub struct JobArgs {
    #[command(subcommand)]
    command: JobCommand,
}

#[derive(Subcommand)]
enum JobCommand {
    /// Submit a job: a prompt for a model (the answer is printed when it is done), or a job spec
    /// (samples/jobs/ has one per kind). Its maximum price is held.
    Submit {
        /// The job spec, a JSON file.
        #[arg(long, conflicts_with_all = ["prompt", "messages"], required_unless_present_any = ["prompt", "messages"])]
        spec: Option<PathBuf>,
        /// Text generation: the prompt (with --model).
        #[arg(long, requires = "model", conflicts_with = "messages")]
        prompt: Option<String>,
        /// Text generation: chat messages, a JSON file `[{"role": "user", "content": "..."}]`
        /// rendered with the model's own chat template (with --model).
        #[arg(long, requires = "model")]
        messages: Option<PathBuf>,
        /// Text generation: tokens to generate, at most.
        #[arg(long, default_value_t = aitbc_core::jobspec::MAX_TOKENS_DEFAULT)]
        max_tokens: u32,
        /// Text generation: 0 is greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// Text generation: the sampler's seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Submit and return without waiting for a text answer.
        #[arg(long)]
        no_wait: bool,
        /// A signed quote saved by `aitbc quote --save`.
        #[arg(long)]
        quote_file: Option<PathBuf>,
        /// Without a quote: the most GPU-seconds the job may use [text generation: the job's
        /// time limit, 60].
        #[arg(long)]
        units: Option<String>,
        /// The model: the rate card's price, and what a prompt runs on.
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        gpu_id: Option<String>,
        /// Names the job: a retry with the same key cannot pay twice [default: a fresh one].
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Submit a batch of jobs in one request: one quote for all, with the GPU's batch discount
    /// when the batch is large enough; each job is held, receipted and settled on its own.
    #[command(after_help = "Example:\n  aitbc job batch --spec samples/jobs/vector_add.json --copies 10 --units 2.5 --region us-west")]
    Batch {
        /// A job spec, a JSON file; repeat for more jobs (all of one kind).
        #[arg(long, required = true)]
        spec: Vec<PathBuf>,
        /// Each spec this many times (1..=100 jobs in all).
        #[arg(long, default_value_t = 1)]
        copies: usize,
        /// The most GPU-seconds each job may use.
        #[arg(long)]
        units: String,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        gpu_id: Option<String>,
        /// Names the batch's jobs: a retry with the same key cannot pay twice [default: a fresh one].
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// A job's state.
    Status { job_id: String },
    /// A finished job's output (or why it failed).
    Result { job_id: String },
    /// Cancel a queued job; its hold is released.
    Cancel { job_id: String },
    /// Rate one of your settled jobs, once: 1 (bad) to 5 (excellent). It counts in the
    /// reputation of the GPU and provider that ran it.
    #[command(after_help = "Example:\n  aitbc job rate job-0192... --rating 5")]
    Rate {
        job_id: String,
        /// 1..=5.
        #[arg(long)]
        rating: i64,
        /// Makes a retry replay the first answer [default: a fresh one; a job is rated once
        /// whatever the key].
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Your jobs, newest first.
    List {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

fn print_job(ctx: &Ctx, j: &Value) {
    if ctx.json {
        crate::output::json(j);
        return;
    }
    pairs(&[
        ("Job", cell(&j["job_id"])),
        ("State", cell(&j["status"]["state"])),
        ("Attempt", format!("{} of {}", cell(&j["status"]["attempt"]), cell(&j["status"]["attempts_max"]))),
        ("GPU", cell(&j["gpu_id"])),
        ("Kind", cell(&j["spec"]["kind"])),
        ("Unit price", format!("{} AITBC/GPU-second", cell(&j["unit_price"]))),
        ("Held", format!("{} AITBC for up to {} GPU-seconds", cell(&j["max_price"]), cell(&j["units_max"]))),
        ("Receipt", cell(&j["receipt_id"])),
    ]);
}

pub async fn run(args: JobArgs, ctx: Ctx) -> Result<(), CliError> {
    let client = ctx.authed()?;
    match args.command {
        JobCommand::Submit { spec, prompt, messages, max_tokens, temperature, seed, no_wait, quote_file, units, model, region, gpu_id, idempotency_key } => {
            let text_job = spec.is_none();
            let spec: Value = match (spec, prompt, messages) {
                (Some(spec), _, _) => serde_json::from_str(&read_bounded(&spec, "spec file")?).map_err(|e| CliError::Usage(format!("{}: {e}", spec.display())))?,
                (None, prompt, messages) => {
                    let mut spec = json!({ "kind": "text_generation", "model": model, "max_tokens": max_tokens, "temperature": temperature, "seed": seed });
                    match (prompt, messages) {
                        (Some(prompt), _) => spec["prompt"] = json!(prompt),
                        (None, Some(path)) => {
                            spec["messages"] = serde_json::from_str(&read_bounded(&path, "messages file")?).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?
                        }
                        (None, None) => return Err(CliError::Usage("give --spec, --prompt or --messages".into())),
                    }
                    spec
                }
            };
            // A text job's hold bounds its price by its time limit (the default 60 s).
            let units = units.or_else(|| text_job.then(|| (aitbc_core::jobspec::JOB_TIMEOUT_MS_DEFAULT / 1_000).to_string()));
            let mut body = json!({ "spec": spec });
            match quote_file {
                Some(path) => body["quote"] = serde_json::from_str(&read_bounded(&path, "quote file")?).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?,
                None => {
                    let units = units.ok_or_else(|| CliError::Usage("give --units (GPU-seconds) or --quote-file".into()))?;
                    body["units"] = json!(units);
                    body["region"] = json!(region.clone().unwrap_or_else(|| "us-west".into()));
                    if let Some(m) = model {
                        body["model"] = json!(m);
                    }
                    if let Some(g) = gpu_id {
                        body["gpu_id"] = json!(g);
                    }
                }
            }
            let key = idempotency_key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let job = client.submit_job(&body, &key).await?;
            if !text_job || no_wait {
                if !ctx.json {
                    println!("Submitted job {} (Idempotency-Key {key})", cell(&job["job_id"]));
                }
                print_job(&ctx, &job);
                return Ok(());
            }
            let job_id = cell(&job["job_id"]);
            let r = wait_for_result(&client, &job_id).await?;
            if ctx.json {
                crate::output::json(&r);
                return Ok(());
            }
            match r["output"]["text"].as_object() {
                Some(t) => {
                    println!("{}", t.get("text").and_then(Value::as_str).unwrap_or_default());
                    eprintln!(
                        "[{job_id}: {} prompt + {} completion tokens, {}, receipt {}]",
                        cell(&t["prompt_tokens"].clone()),
                        cell(&t["completion_tokens"].clone()),
                        cell(&t["finish_reason"].clone()),
                        cell(&r["receipt_id"])
                    );
                }
                None => return Err(CliError::Failed(format!("job {job_id} {}: {}", cell(&r["state"]), cell(&r["failure"]["reason"])))),
            }
        }
        JobCommand::Batch { spec, copies, units, model, region, gpu_id, idempotency_key } => {
            let mut specs = Vec::new();
            for path in &spec {
                let one: Value = serde_json::from_str(&read_bounded(path, "spec file")?).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
                specs.extend(std::iter::repeat_n(one, copies));
            }
            let mut body = json!({ "specs": specs, "units": units });
            match gpu_id {
                Some(g) => body["gpu_id"] = json!(g),
                None => body["region"] = json!(region.unwrap_or_else(|| "us-west".into())),
            }
            if let Some(m) = model {
                body["model"] = json!(m);
            }
            let key = idempotency_key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let made: Value = client.post_idempotent("/v1/batches", &body, &key).await?;
            if ctx.json {
                crate::output::json(&made);
                return Ok(());
            }
            let terms = &made["quote"]["terms"];
            let discount = terms["breakdown"]["batch_bps"].as_u64().map_or(0, |b| 100 - b / 100);
            println!(
                "Batch of {} on GPU {} (Idempotency-Key {key}): {} AITBC/GPU-second each, {discount}% batch discount, {} AITBC held per job",
                made["jobs"].as_array().map_or(0, Vec::len),
                cell(&terms["gpu_id"]),
                cell(&terms["unit_price"]),
                cell(&terms["max_price"])
            );
            let rows: Vec<Vec<String>> = made["jobs"].as_array().cloned().unwrap_or_default().iter().map(|j| vec![cell(&j["job_id"]), cell(&j["status"]["state"]), cell(&j["max_price"])]).collect();
            table(&["JOB ID", "STATE", "HELD"], &rows);
            for r in made["refused"].as_array().cloned().unwrap_or_default() {
                eprintln!("job {} of the batch refused: {} ({})", cell(&r["index"]), cell(&r["detail"]), cell(&r["code"]));
            }
        }
        JobCommand::Status { job_id } => print_job(&ctx, &client.job(&job_id).await?),
        JobCommand::Result { job_id } => {
            let r: Value = client.get(&format!("/v1/jobs/{job_id}/result")).await?;
            if ctx.json {
                crate::output::json(&r);
            } else if r["output"].is_object() {
                let o = &r["output"];
                pairs(&[
                    ("Job", cell(&r["job_id"])),
                    ("State", cell(&r["state"])),
                    ("Backend", cell(&o["backend"])),
                    ("Checksum", cell(&o["checksum"])),
                    ("Values", cell(&o["values"])),
                    ("Device time", format!("{} ms", cell(&o["device_ms"]))),
                    ("Wall time", format!("{} ms", cell(&o["wall_ms"]))),
                    ("Receipt", cell(&r["receipt_id"])),
                ]);
            } else {
                pairs(&[("Job", cell(&r["job_id"])), ("State", cell(&r["state"])), ("Failure", cell(&r["failure"]["reason"]))]);
            }
        }
        JobCommand::Cancel { job_id } => {
            let j: Value = client.post(&format!("/v1/jobs/{job_id}/cancel"), &json!({})).await?;
            print_job(&ctx, &j);
        }
        JobCommand::Rate { job_id, rating, idempotency_key } => {
            let key = idempotency_key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let r: Value = client.post_idempotent(&format!("/v1/jobs/{job_id}/rating"), &json!({ "rating": rating }), &key).await?;
            if ctx.json {
                crate::output::json(&r);
            } else {
                pairs(&[("Job", cell(&r["job_id"])), ("GPU", cell(&r["gpu_id"])), ("Provider", cell(&r["provider"])), ("Rating", format!("{} of 5", cell(&r["rating"])))]);
            }
        }
        JobCommand::List { limit } => {
            let page: Value = client.get(&format!("/v1/jobs?limit={limit}")).await?;
            if ctx.json {
                crate::output::json(&page);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = page["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|j| vec![cell(&j["job_id"]), cell(&j["status"]["state"]), cell(&j["spec"]["kind"]), cell(&j["max_price"]), cell(&j["receipt_id"])])
                .collect();
            table(&["JOB ID", "STATE", "KIND", "HELD", "RECEIPT"], &rows);
        }
    }
    Ok(())
}

/// How long `job submit` waits for a text answer, at most: the job's own time limit and the time
/// to be claimed.
const RESULT_WAIT_MS_MAX: u64 = aitbc_core::jobspec::JOB_TIMEOUT_MS_DEFAULT * 2;
/// Between two looks at the job.
const RESULT_POLL_MS: u64 = 250;

/// The job's result once it has one (completed, settled or failed), polling within the bound.
pub(crate) async fn wait_for_result(client: &aitbc_client::Client, job_id: &str) -> Result<Value, CliError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(RESULT_WAIT_MS_MAX);
    loop {
        let job = client.job(job_id).await?;
        let state = job["status"]["state"].as_str().unwrap_or_default();
        if matches!(state, "completed" | "settled" | "failed" | "cancelled" | "expired") {
            return Ok(client.get(&format!("/v1/jobs/{job_id}/result")).await?);
        }
        if std::time::Instant::now() >= deadline {
            return Err(CliError::Failed(format!("job {job_id} is still {state} after {} s; follow it with `aitbc job status {job_id}`", RESULT_WAIT_MS_MAX / 1_000)));
        }
        tokio::time::sleep(std::time::Duration::from_millis(RESULT_POLL_MS)).await;
    }
}
