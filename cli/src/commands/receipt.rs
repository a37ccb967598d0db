//! `aitbc receipt verify <file> --keys <key-set-file>`: offline verification against pinned keys.

use crate::CliError;
use aitbc_core::receipt::Receipt;
use aitbc_core::signing::{KeySet, KeySetDocument};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

/// Receipt and key files are small; refuse anything larger before reading it.
const RECEIPT_FILE_BYTES_MAX: u64 = 64 * 1024;
const KEY_FILE_BYTES_MAX: u64 = 16 * 1024 * 1024;

#[derive(Args)]
pub struct ReceiptArgs {
    #[command(subcommand)]
    command: ReceiptCommand,
}

#[derive(Subcommand)]
enum ReceiptCommand {
    /// Verify a receipt's provider signature (and countersignature, if present) offline.
    #[command(after_help = "Example:\n  aitbc receipt verify samples/receipts/receipt.json --keys samples/receipts/keys.json")]
    Verify {
        /// The receipt, as a JSON file.
        file: PathBuf,
        /// The trusted public keys ({"keys": [...]}, as GET /v1/keys serves them). Never the
        /// receipt's own claim.
        #[arg(long)]
        keys: PathBuf,
    },
}

fn read_bounded(path: &Path, bytes_max: u64, what: &str) -> Result<String, CliError> {
    let meta = std::fs::metadata(path).map_err(|e| CliError::Usage(format!("{what} {}: {e}", path.display())))?;
    if meta.len() > bytes_max {
        return Err(CliError::Usage(format!("{what} {} is larger than {bytes_max} bytes", path.display())));
    }
    std::fs::read_to_string(path).map_err(|e| CliError::Usage(format!("{what} {}: {e}", path.display())))
}

pub fn run(args: ReceiptArgs, json: bool) -> Result<(), CliError> {
    match args.command {
        ReceiptCommand::Verify { file, keys } => {
            let receipt_text = read_bounded(&file, RECEIPT_FILE_BYTES_MAX, "receipt file")?;
            let keys_text = read_bounded(&keys, KEY_FILE_BYTES_MAX, "key file")?;
            let receipt: Receipt = serde_json::from_str(&receipt_text)
                .map_err(|e| CliError::Usage(format!("{} is not a receipt: {e}", file.display())))?;
            let document: KeySetDocument = serde_json::from_str(&keys_text)
                .map_err(|e| CliError::Usage(format!("{} is not a key set: {e}", keys.display())))?;
            let key_set = KeySet::from_document(&document).map_err(|e| CliError::Usage(format!("{}: {e}", keys.display())))?;
            let verdict = receipt.verify(&key_set);
            let body = &receipt.body;
            if json {
                let out = serde_json::json!({
                    "receipt_id": body.receipt_id,
                    "valid": verdict.is_ok(),
                    "error": verdict.as_ref().err().map(ToString::to_string),
                    "key_id": receipt.signature.key_id,
                    "units": body.units,
                    "unit_price": body.unit_price,
                    "price": body.price,
                });
                println!("{out}");
            }
            match verdict {
                Ok(()) => {
                    if !json {
                        println!(
                            "receipt {} verified: signed by {} ({}), {} gpu_seconds x {} = {} AITBC",
                            body.receipt_id, receipt.signature.key_id, body.provider, body.units, body.unit_price, body.price
                        );
                    }
                    Ok(())
                }
                Err(e) => Err(CliError::Failed(format!("receipt {} does not verify: {e}", body.receipt_id))),
            }
        }
    }
}
