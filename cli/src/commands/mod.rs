//! One module per top-level command.

pub mod capacity;
pub mod chat;
pub mod demo;
pub mod init;
pub mod insight;
pub mod job;
pub mod marketplace;
pub mod models;
pub mod quote;
pub mod receipt;
pub mod up;
pub mod wallet;

use crate::{Command, CliError, Ctx};

pub async fn run(command: Command, ctx: Ctx) -> Result<(), CliError> {
    match command {
        Command::Init(a) => init::run(a, ctx).await,
        Command::Marketplace(a) => marketplace::run(a, ctx).await,
        Command::Receipts(a) => receipt::list(a, ctx).await,
        Command::Receipt(a) => receipt::run(a, ctx).await,
        Command::Wallet(a) => wallet::run(a, ctx).await,
        Command::Quote(a) => quote::run(a, ctx).await,
        Command::Job(a) => job::run(a, ctx).await,
        Command::Up(a) => up::run(a, ctx).await,
        Command::Demo(a) => demo::run(a, ctx).await,
        Command::Models(a) => models::run(a, ctx).await,
        Command::Chat(a) => chat::run(a, ctx).await,
    }
}
