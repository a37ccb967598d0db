//! The CLI's home (`~/.aitbc`, or `--home` / `AITBC_HOME`): `config.toml` with the API URL and
//! the account `aitbc init` opened, and the provider's signing key file (mode 0600).

use crate::CliError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Files the CLI reads from its home are at most this large.
pub const HOME_FILE_BYTES_MAX: u64 = 1 << 20;
pub const CONFIG_FILE: &str = "config.toml";
pub const KEY_FILE: &str = "provider-key.json";

/// What `aitbc init` stores.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

/// The home directory: the flag, else `$HOME/.aitbc`.
pub fn home_dir(flag: Option<&Path>) -> PathBuf {
    match flag {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".aitbc"),
    }
}

/// Expands a leading `~/`.
pub fn expand(path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(rest),
        None => PathBuf::from(path),
    }
}

pub fn read_bounded(path: &Path, what: &str) -> Result<String, CliError> {
    let meta = std::fs::metadata(path).map_err(|e| CliError::Usage(format!("{what} {}: {e}", path.display())))?;
    if meta.len() > HOME_FILE_BYTES_MAX {
        return Err(CliError::Usage(format!("{what} {} is larger than {HOME_FILE_BYTES_MAX} bytes", path.display())));
    }
    std::fs::read_to_string(path).map_err(|e| CliError::Usage(format!("{what} {}: {e}", path.display())))
}

impl HomeConfig {
    pub fn load(home: &Path) -> Result<HomeConfig, CliError> {
        let path = home.join(CONFIG_FILE);
        if !path.exists() {
            return Ok(HomeConfig::default());
        }
        toml::from_str(&read_bounded(&path, "config")?).map_err(|e| CliError::Usage(format!("config {}: {e}", path.display())))
    }

    pub fn save(&self, home: &Path) -> Result<(), CliError> {
        std::fs::create_dir_all(home).map_err(|e| CliError::Failed(format!("{}: {e}", home.display())))?;
        let text = toml::to_string(self).map_err(|e| CliError::Failed(e.to_string()))?;
        write_private(&home.join(CONFIG_FILE), &text)
    }
}

/// Writes a file only its owner may read (it holds an API key or a secret key).
pub fn write_private(path: &Path, text: &str) -> Result<(), CliError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
    file.write_all(text.as_bytes()).map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))
}
