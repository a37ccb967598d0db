//! `aitbc job submit|status|result|cancel|list`.

use crate::home::read_bounded;
use crate::output::{cell, pairs, table};
use crate::{CliError, Ctx};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Args)]
#[command(after_help = "Examples:\n  aitbc job submit --spec samples/jobs/vector_add.json --units 5 --region us-west\n  aitbc job status job-0192...\n  aitbc job result job-0192...")]
pub struct JobArgs {
    #[command(subcommand)]
    command: JobCommand,
}

#[derive(Subcommand)]
enum JobCommand {
    /// Submit a job spec (samples/jobs/ has one per kind); its maximum price is held.
    Submit {
        /// The job spec, a JSON file.
        #[arg(long)]
        spec: PathBuf,
        /// A signed quote saved by `aitbc quote --save`.
        #[arg(long)]
        quote_file: Option<PathBuf>,
        /// Without a quote: the most GPU-seconds the job may use.
        #[arg(long)]
        units: Option<String>,
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
    /// A job's state.
    Status { job_id: String },
    /// A finished job's output (or why it failed).
    Result { job_id: String },
    /// Cancel a queued job; its hold is released.
    Cancel { job_id: String },
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
        JobCommand::Submit { spec, quote_file, units, model, region, gpu_id, idempotency_key } => {
            let spec: Value = serde_json::from_str(&read_bounded(&spec, "spec file")?).map_err(|e| CliError::Usage(format!("{}: {e}", spec.display())))?;
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
            if !ctx.json {
                println!("Submitted job {} (Idempotency-Key {key})", cell(&job["job_id"]));
            }
            print_job(&ctx, &job);
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
