//! `aitbc receipts`, `aitbc receipt <id>` and `aitbc receipt verify <id-or-file>`: verification
//! checks the provider's signature against known keys only (a pinned key file, or the registry's
//! `GET /v1/keys`), never a key the receipt names for itself.

use crate::home::read_bounded;
use crate::output::{cell, pairs, table};
use crate::{CliError, Ctx};
use aitbc_core::receipt::Receipt;
use aitbc_core::signing::KeySetDocument;
use clap::{Args, Subcommand};
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct ReceiptsArgs {
    /// A client's receipts (yours unless you are an admin).
    #[arg(long)]
    client: Option<String>,
    /// A provider's receipts.
    #[arg(long)]
    provider: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
#[command(after_help = "Examples:\n  aitbc receipt rcpt-0192...\n  aitbc receipt verify rcpt-0192...\n  aitbc receipt verify receipt.json --keys keys.json")]
pub struct ReceiptArgs {
    #[command(subcommand)]
    command: Option<ReceiptCommand>,
    /// The receipt to show.
    receipt_id: Option<String>,
}

#[derive(Subcommand)]
enum ReceiptCommand {
    /// Verify a receipt (an id, or a JSON file) against known keys.
    #[command(after_help = "Examples:\n  aitbc receipt verify samples/receipts/receipt.json --keys samples/receipts/keys.json\n  aitbc receipt verify rcpt-0192...   # keys from the registry (GET /v1/keys)")]
    Verify {
        /// A receipt id, or the path of a receipt JSON file.
        receipt: String,
        /// Trusted public keys ({"keys": [...]}); without it, the registry's keys.
        #[arg(long)]
        keys: Option<PathBuf>,
    },
}

pub async fn list(args: ReceiptsArgs, ctx: Ctx) -> Result<(), CliError> {
    let mut path = format!("/v1/receipts?limit={}", args.limit);
    if let Some(c) = &args.client {
        path.push_str(&format!("&client={c}"));
    }
    if let Some(p) = &args.provider {
        path.push_str(&format!("&provider={p}"));
    }
    let page: Value = ctx.authed()?.get(&path).await?;
    let items = page["items"].as_array().cloned().unwrap_or_default();
    if ctx.json {
        crate::output::json(&page);
    } else if items.is_empty() {
        println!("No receipts.");
    } else {
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|r| vec![cell(&r["receipt_id"]), cell(&r["job_id"]), cell(&r["model"]), format!("{} {}", cell(&r["units"]), cell(&r["unit_type"])), cell(&r["price"]), cell(&r["completed_at"])])
            .collect();
        table(&["RECEIPT ID", "JOB ID", "MODEL", "UNITS", "PRICE", "COMPLETED AT"], &rows);
    }
    Ok(())
}

pub async fn run(args: ReceiptArgs, ctx: Ctx) -> Result<(), CliError> {
    match (args.command, args.receipt_id) {
        (Some(ReceiptCommand::Verify { receipt, keys }), _) => verify(&receipt, keys.as_deref(), ctx).await,
        (None, Some(id)) => {
            let r: Value = ctx.authed()?.get(&format!("/v1/receipts/{id}")).await?;
            if ctx.json {
                crate::output::json(&r);
            } else {
                pairs(&[
                    ("Receipt", cell(&r["receipt_id"])),
                    ("Job", cell(&r["job_id"])),
                    ("GPU", cell(&r["gpu_id"])),
                    ("Provider", cell(&r["provider"])),
                    ("Client", cell(&r["client"])),
                    ("Model", cell(&r["model"])),
                    ("Units", format!("{} {}", cell(&r["units"]), cell(&r["unit_type"]))),
                    ("Unit price", format!("{} AITBC", cell(&r["unit_price"]))),
                    ("Price", format!("{} AITBC", cell(&r["price"]))),
                    ("Started at", cell(&r["started_at"])),
                    ("Completed at", cell(&r["completed_at"])),
                    ("Signed by", format!("{} ({})", cell(&r["signature"]["key_id"]), cell(&r["signature"]["alg"]))),
                    ("Countersigned by", cell(&r["countersignature"]["key_id"])),
                ]);
            }
            Ok(())
        }
        (None, None) => Err(CliError::Usage("give a receipt id, or `verify <id-or-file>`".into())),
    }
}

async fn verify(receipt: &str, keys: Option<&Path>, ctx: Ctx) -> Result<(), CliError> {
    let path = Path::new(receipt);
    let receipt: Receipt = if path.is_file() {
        serde_json::from_str(&read_bounded(path, "receipt file")?).map_err(|e| CliError::Usage(format!("{} is not a receipt: {e}", path.display())))?
    } else if receipt.starts_with("rcpt-") {
        ctx.authed()?.get(&format!("/v1/receipts/{receipt}")).await?
    } else {
        return Err(CliError::Usage(format!("{receipt:?} is neither a receipt file nor a receipt id (rcpt-...)")));
    };
    let (document, source) = match keys {
        Some(file) => {
            let doc: KeySetDocument = serde_json::from_str(&read_bounded(file, "key file")?).map_err(|e| CliError::Usage(format!("{} is not a key set: {e}", file.display())))?;
            (doc, file.display().to_string())
        }
        None => (ctx.client().keys().await?, format!("{}/v1/keys", ctx.api)),
    };
    let provider_keys = document.provider_keys().map_err(|e| CliError::Usage(format!("{source}: {e}")))?;
    let verdict = receipt.verify(&provider_keys);
    let counter = match (document.marketplace_keys().map_err(|e| CliError::Usage(e.to_string()))?, &receipt.countersignature) {
        (Some(market), Some(_)) => Some(receipt.verify_countersigned(&provider_keys, &market).is_ok()),
        _ => None,
    };
    let body = &receipt.body;
    if ctx.json {
        crate::output::json(&serde_json::json!({
            "receipt_id": body.receipt_id, "valid": verdict.is_ok() && counter != Some(false),
            "provider_signature": verdict.is_ok(), "countersignature": counter,
            "error": verdict.as_ref().err().map(ToString::to_string), "keys": source,
            "units": body.units, "unit_price": body.unit_price, "price": body.price,
        }));
    }
    match (verdict, counter) {
        (Ok(()), Some(false)) => Err(CliError::Failed(format!("receipt {}: provider signature verifies, the marketplace countersignature does not", body.receipt_id))),
        (Ok(()), counter) => {
            if !ctx.json {
                println!(
                    "receipt {} verified: signed by {} ({}), {} {} x {} = {} AITBC",
                    body.receipt_id,
                    receipt.signature.key_id,
                    body.provider,
                    body.units,
                    serde_json::to_value(body.unit_type).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
                    body.unit_price,
                    body.price
                );
                if let (Some(prompt), Some(completion)) = (body.prompt_tokens, body.completion_tokens) {
                    println!("tokens: {prompt} prompt, {completion} completion");
                }
                match counter {
                    Some(true) => println!("countersignature by the marketplace ({}) verified", receipt.countersignature.as_ref().map(|c| c.key_id.to_string()).unwrap_or_default()),
                    _ => println!("countersignature not checked (the keys name no marketplace key, or the receipt has none)"),
                }
                println!("keys: {source}");
            }
            Ok(())
        }
        (Err(e), _) => Err(CliError::Failed(format!("receipt {} does not verify: {e}", body.receipt_id))),
    }
}
