//! The `aitbc` command: the guides' marketplace commands against the API, `aitbc up` (the
//! whole marketplace in one process) and `aitbc demo`. Errors print as one line on stderr;
//! usage errors exit 2, other failures 1; network errors name the URL.

mod commands;
mod home;
mod local;
mod output;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "aitbc", version, about = "The aitbc GPU-compute marketplace", propagate_version = true)]
#[command(after_help = "Start here:\n  aitbc demo                      # a whole marketplace run, start to finish\n  aitbc up                        # the marketplace on this machine, then in another terminal:\n  aitbc init                      # a provider account and its signing key\n  aitbc marketplace gpu register --name \"My-GPU\" --memory 24 --cuda-version 12.1 --base-price 0.05")]
pub struct Cli {
    /// The API's URL [default: the one `aitbc init` saved, else http://127.0.0.1:8080].
    #[arg(long, global = true, env = "AITBC_API")]
    api: Option<String>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Where the CLI keeps its config and keys [default: ~/.aitbc].
    #[arg(long, global = true, env = "AITBC_HOME")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open an account, make an Ed25519 key pair (providers) and save both locally.
    #[command(after_help = "Examples:\n  aitbc init                 # a provider account (list GPUs, earn)\n  aitbc init --role client   # a client account (submit jobs, pay)")]
    Init(commands::init::InitArgs),
    /// GPU listings, earnings and status (the GPU Monetization Guide).
    Marketplace(commands::marketplace::MarketplaceArgs),
    /// List receipts: yours, or a client's or provider's.
    #[command(after_help = "Examples:\n  aitbc receipts\n  aitbc receipts --client ait1...")]
    Receipts(commands::receipt::ReceiptsArgs),
    /// Show a receipt, or verify one (`aitbc receipt verify <id-or-file>`).
    Receipt(commands::receipt::ReceiptArgs),
    /// Your balance; deposits.
    Wallet(commands::wallet::WalletArgs),
    /// Price a job before submitting it.
    #[command(after_help = "Examples:\n  aitbc quote --model llama3.2 --units 2.5 --region us-west\n  aitbc quote --units 60 --gpu-id gpu-0192...")]
    Quote(commands::quote::QuoteArgs),
    /// Submit jobs and follow them.
    Job(commands::job::JobArgs),
    /// Run the marketplace here: the API, a worker and the scheduler, on one SQLite file.
    #[command(after_help = "Example:\n  aitbc up --data-dir ~/.aitbc/data --listen 127.0.0.1:8080\nCtrl-C stops it; the data directory keeps everything for the next start.")]
    Up(commands::up::UpArgs),
    /// A whole marketplace run in a temporary directory, with a summary that must balance.
    #[command(after_help = "Example:\n  aitbc demo --jobs 36")]
    Demo(commands::demo::DemoArgs),
    /// Language models: fetch one from the catalog, list what is here.
    Models(commands::models::ModelsArgs),
    /// Ask a model a question; the answer streams into the terminal (the OpenAI-compatible API).
    Chat(commands::chat::ChatArgs),
}

/// A command's failure: the one line to print and the exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input: exit 2, like clap's usage errors.
    #[error("{0}")]
    Usage(String),
    /// The command could not do what was asked: exit 1.
    #[error("{0}")]
    Failed(String),
}

impl From<aitbc_client::ClientError> for CliError {
    fn from(e: aitbc_client::ClientError) -> Self {
        match &e {
            aitbc_client::ClientError::Api { status: 400 | 422, field: Some(field), detail, .. } => CliError::Usage(format!("{field}: {detail}")),
            _ => CliError::Failed(e.to_string()),
        }
    }
}

/// What every command gets: where the API is, how to print, the local config.
pub struct Ctx {
    pub api: String,
    pub json: bool,
    pub home: PathBuf,
    pub config: home::HomeConfig,
}

impl Ctx {
    /// A client with the saved API key, if any.
    pub fn client(&self) -> aitbc_client::Client {
        aitbc_client::Client::new(&self.api, self.config.api_key.clone())
    }

    /// A client that must have a key.
    pub fn authed(&self) -> Result<aitbc_client::Client, CliError> {
        if self.config.api_key.is_none() {
            return Err(CliError::Usage(format!("no account here yet: run `aitbc init` (home {})", self.home.display())));
        }
        Ok(self.client())
    }

    pub fn address(&self) -> Result<String, CliError> {
        self.config.address.clone().ok_or_else(|| CliError::Usage("no account here yet: run `aitbc init`".into()))
    }
}

/// Clap's errors as one line: the message, with its hint of possible values if any.
fn parse() -> Result<Cli, ExitCode> {
    match Cli::try_parse() {
        Ok(cli) => Ok(cli),
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand) {
                e.exit();
            }
            let text = e.render().to_string();
            let message: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(|l| l.trim().trim_start_matches("error: "))
                .collect();
            eprintln!("aitbc: {} (see --help)", message.join("; "));
            Err(ExitCode::from(2))
        }
    }
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let home = home::home_dir(cli.home.as_deref());
    let result = home::HomeConfig::load(&home).and_then(|config| {
        let api = cli.api.clone().or_else(|| config.api.clone()).unwrap_or_else(|| "http://127.0.0.1:8080".to_string());
        let ctx = Ctx { api, json: cli.json, home, config };
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| CliError::Failed(e.to_string()))?;
        runtime.block_on(commands::run(cli.command, ctx))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aitbc: {}", e.to_string().replace('\n', " "));
            ExitCode::from(match e {
                CliError::Usage(_) => 2,
                CliError::Failed(_) => 1,
            })
        }
    }
}
