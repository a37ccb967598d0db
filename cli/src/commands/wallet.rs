//! `aitbc wallet balance|deposit|history`.

use crate::output::{cell, pairs, table};
use crate::{CliError, Ctx};
use clap::{Args, Subcommand};
use serde_json::Value;

#[derive(Args)]
#[command(after_help = "Examples:\n  aitbc wallet balance\n  aitbc wallet deposit 100")]
pub struct WalletArgs {
    #[command(subcommand)]
    command: WalletCommand,
}

#[derive(Subcommand)]
enum WalletCommand {
    /// Available and held (escrow) balances; earnings for providers.
    Balance,
    /// Add funds to your wallet (the local faucet; an admin key elsewhere).
    Deposit {
        /// AITBC, e.g. 100 or 2.5.
        amount: String,
        /// Makes a retried deposit apply once [default: a fresh one].
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Ledger entries of your wallet (or earnings), newest first.
    History {
        #[arg(long, default_value = "wallet")]
        account: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

pub async fn run(args: WalletArgs, ctx: Ctx) -> Result<(), CliError> {
    let client = ctx.authed()?;
    let address = ctx.address()?;
    match args.command {
        WalletCommand::Balance => {
            let b: Value = client.balances(&address).await?;
            if ctx.json {
                crate::output::json(&b);
                return Ok(());
            }
            let mut lines = vec![
                ("Address", address.clone()),
                ("Available", format!("{} AITBC", cell(&b["wallet"]["available"]))),
                ("Held in escrow", format!("{} AITBC", cell(&b["wallet"]["held"]))),
            ];
            if b["earnings"].is_object() {
                lines.push(("Earnings (unpaid)", format!("{} AITBC", cell(&b["earnings"]["available"]))));
            }
            pairs(&lines);
        }
        WalletCommand::Deposit { amount, idempotency_key } => {
            let key = idempotency_key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let r = client.deposit(&address, &amount, &key).await?;
            if ctx.json {
                crate::output::json(&r);
            } else {
                println!("Deposited {amount} AITBC; available now {} AITBC", cell(&r["balances"]["wallet"]["available"]));
            }
        }
        WalletCommand::History { account, limit } => {
            let page: Value = client.get(&format!("/v1/accounts/{address}/ledger?account={account}&limit={limit}")).await?;
            if ctx.json {
                crate::output::json(&page);
                return Ok(());
            }
            let nano = |v: &Value| aitbc_core::money::Amount::from_raw(v.as_i64().unwrap_or(0).unsigned_abs()).to_string();
            let signed = |v: &Value| format!("{}{}", if v.as_i64().unwrap_or(0) < 0 { "-" } else { "+" }, nano(v));
            let rows: Vec<Vec<String>> = page["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|e| vec![cell(&e["at_ms"]), cell(&e["type"]), signed(&e["available_delta"]), signed(&e["held_delta"]), cell(&e["transfer_id"])])
                .collect();
            table(&["AT (ms)", "TYPE", "AVAILABLE", "HELD", "TRANSFER"], &rows);
        }
    }
    Ok(())
}
