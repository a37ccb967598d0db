//! `aitbc init`: open an account on the API, make the provider's Ed25519 key pair and register
//! its public half, and save the account, its API key and the key file in the CLI's home.

use crate::home::{write_private, HomeConfig, KEY_FILE};
use crate::{CliError, Ctx};
use aitbc_core::signing::NamedSigningKey;
use aitbc_core::values::KeyId;
use clap::{Args, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
pub enum InitRole {
    Provider,
    Client,
}

#[derive(Args)]
pub struct InitArgs {
    /// provider (lists GPUs, signs receipts) or client (submits and pays for jobs).
    #[arg(long, value_enum, default_value = "provider")]
    role: InitRole,
    /// Replace an account already saved in this home.
    #[arg(long)]
    force: bool,
}

pub async fn run(args: InitArgs, ctx: Ctx) -> Result<(), CliError> {
    if ctx.config.api_key.is_some() && !args.force {
        let address = ctx.config.address.clone().unwrap_or_default();
        return Err(CliError::Usage(format!("already initialized as {address} in {}; use --force to open a new account", ctx.home.display())));
    }
    let role = match args.role {
        InitRole::Provider => "provider",
        InitRole::Client => "client",
    };
    let anon = aitbc_client::Client::new(&ctx.api, None);
    let opened = anon.open_account(role).await?;
    let address = opened["address"].as_str().ok_or_else(|| CliError::Failed("the API returned no address".into()))?.to_string();
    let api_key = opened["api_key"].as_str().ok_or_else(|| CliError::Failed("the API returned no API key".into()))?.to_string();
    let mut config = HomeConfig { api: Some(ctx.api.clone()), address: Some(address.clone()), role: Some(role.into()), api_key: Some(api_key.clone()), key_file: None };
    let mut key_id = None;
    if role == "provider" {
        std::fs::create_dir_all(&ctx.home).map_err(|e| CliError::Failed(format!("{}: {e}", ctx.home.display())))?;
        let id = KeyId::parse(&format!("{}-ed25519-1", &address[4..16])).expect("a valid key id");
        let key = NamedSigningKey::generate(id.clone());
        let path = ctx.home.join(KEY_FILE);
        write_private(&path, &serde_json::to_string_pretty(&key.to_file()).expect("serializes"))?;
        anon.with_key(&api_key).register_key(&key.public()).await?;
        config.key_file = Some(path);
        key_id = Some(id);
    }
    config.save(&ctx.home)?;
    if ctx.json {
        crate::output::json(&serde_json::json!({ "address": address, "role": role, "key_id": key_id, "home": ctx.home, "api": ctx.api }));
    } else {
        println!("Initialized {role} account {address}");
        if let Some(id) = key_id {
            println!("Signing key {id} registered; secret key in {}", ctx.home.join(KEY_FILE).display());
        }
        println!("Config saved in {}", ctx.home.join(crate::home::CONFIG_FILE).display());
    }
    Ok(())
}
