//! Shared by the test files: where the Python of the reference side is, and the skip rule
//! (absent prerequisites skip loudly on a developer machine and fail under CI).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// A test that cannot run: fails under CI, skips with a loud message elsewhere.
pub fn missing(what: &str) {
    if under_ci() {
        panic!("CI is set and {what}; run scripts/setup-inference.sh --venv .venv");
    }
    eprintln!("\n!!!!!!!! SKIPPED: {what}; run scripts/setup-inference.sh (CI=true makes this a failure) !!!!!!!!\n");
}

/// AITBC_TEST_PYTHON, else the repository's .venv.
pub fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("AITBC_TEST_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    venv.exists().then_some(venv)
}

/// The python, if it can import `modules`.
pub fn python_with(modules: &str) -> Option<PathBuf> {
    let py = python()?;
    let ok = Command::new(&py).arg("-c").arg(format!("import {modules}")).output().map(|o| o.status.success()).unwrap_or(false);
    ok.then_some(py)
}

pub fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}
