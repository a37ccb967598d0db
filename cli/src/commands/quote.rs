//! `aitbc quote`: the price of a job before submitting it, with every factor.

use crate::output::{cell, pairs};
use crate::{CliError, Ctx};
use clap::Args;
use serde_json::{json, Value};

#[derive(Args)]
pub struct QuoteArgs {
    /// A model from the rate card (e.g. llama3.2); none for raw compute.
    #[arg(long)]
    pub model: Option<String>,
    /// The most GPU-seconds the job may use, e.g. 2.5.
    #[arg(long)]
    pub units: String,
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long)]
    pub gpu_id: Option<String>,
    /// basic, premium or enterprise.
    #[arg(long, default_value = "basic")]
    pub tier: String,
    /// The rental's length in hours (more than 10 earns the bulk discount).
    #[arg(long, default_value_t = 0)]
    pub hours: u32,
    /// Save the signed quote to this file, for `aitbc job submit --quote-file`.
    #[arg(long)]
    pub save: Option<std::path::PathBuf>,
}

pub fn body(args: &QuoteArgs) -> Value {
    let mut b = json!({ "units": args.units, "tier": args.tier, "duration_hours": args.hours });
    for (k, v) in [("model", &args.model), ("region", &args.region), ("gpu_id", &args.gpu_id)] {
        if let Some(v) = v {
            b[k] = json!(v);
        }
    }
    if args.region.is_none() && args.gpu_id.is_none() {
        b["region"] = json!("us-west");
    }
    b
}

pub async fn run(args: QuoteArgs, ctx: Ctx) -> Result<(), CliError> {
    let q = ctx.client().quote(&body(&args)).await?;
    if let Some(path) = &args.save {
        std::fs::write(path, serde_json::to_string_pretty(&q).expect("serializes")).map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
    }
    if ctx.json {
        crate::output::json(&q);
        return Ok(());
    }
    let t = &q["terms"];
    let b = &t["breakdown"];
    let bps = |v: &Value| format!("x{}", aitbc_core::money::Rate::from_raw(v.as_u64().unwrap_or(0) * 100_000_000));
    pairs(&[
        ("Quote", cell(&t["quote_id"])),
        ("GPU", format!("{} ({})", cell(&t["gpu_id"]), cell(&t["region"]))),
        ("Model", cell(&t["model"])),
        ("Units", format!("{} GPU-seconds", cell(&t["units"]))),
        ("Listing rate", format!("{} AITBC/GPU-second", cell(&b["listing_rate"]))),
        ("Rate card", format!("{} AITBC/GPU-second", cell(&b["card_rate"]))),
        ("Base rate", format!("{} ({})", cell(&b["base_rate"]), cell(&b["base_source"]))),
        ("Strategy", format!("{} {}", cell(&b["strategy"]), bps(&b["strategy_bps"]))),
        ("Tier", format!("{} {}", cell(&b["tier"]), bps(&b["tier_bps"]))),
        ("Bulk discount", bps(&b["bulk_bps"])),
        ("Unit price", format!("{} AITBC/GPU-second", cell(&t["unit_price"]))),
        ("Maximum price", format!("{} AITBC (held when you submit)", cell(&t["max_price"]))),
        ("Expires at (ms)", cell(&t["expires_at_ms"])),
    ]);
    Ok(())
}
