//! The `aitbc` command. Errors print as one line on stderr; usage errors exit 2, failures 1.

mod commands;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "aitbc", version, about = "The aitbc GPU-compute marketplace", propagate_version = true)]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with usage receipts.
    Receipt(commands::receipt::ReceiptArgs),
}

/// A command's failure: the one line to print and the exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input: exit 2, like clap's usage errors.
    #[error("{0}")]
    Usage(String),
    /// The command ran and the answer is no (e.g. a receipt does not verify): exit 1.
    #[error("{0}")]
    Failed(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Receipt(args) => commands::receipt::run(args, cli.json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aitbc: {e}");
            ExitCode::from(match e {
                CliError::Usage(_) => 2,
                CliError::Failed(_) => 1,
            })
        }
    }
}
