//! The `aitbc-worker` binary: `assess` prints valid JSON for cpu/auto and fails in one line for
//! cuda where there is no GPU; `exec` runs a spec file.

use std::process::Command;

use aitbc_worker::{auto_picks_cuda, probe_cuda, CudaAvailability};
use serde_json::Value;

fn worker(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_aitbc-worker")).args(args).env_remove("AITBC_WORKER_BACKEND").output().expect("the binary runs")
}

fn sample(name: &str) -> String {
    format!("{}/../samples/jobs/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn stdout_json(output: &std::process::Output) -> Value {
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

#[test]
fn assess_cpu_prints_the_hosts_figures() {
    let json = stdout_json(&worker(&["assess", "--backend", "cpu"]));
    assert_eq!(json["backend"], "cpu");
    assert!(json["cpu"]["cores"].as_u64().unwrap() >= 1);
    assert!(json["cpu"]["threads_used"].as_u64().unwrap() >= 1);
    assert!(json.get("gpu").is_none());
    let gemm = &json["gemm"][0];
    assert_eq!(gemm["dtype"], "f32");
    assert!(gemm["tflops"].as_f64().unwrap() > 0.0, "{json}");
    assert!(json["performance_score"].as_f64().unwrap() > 0.0, "{json}");
    assert_eq!(json["score_reference_tflops"], 100.0);
    assert_eq!(json["max_concurrent_jobs"], 1);
    assert_eq!(json["kinds"], serde_json::json!(["vector_add", "reduction", "gemm"]));
}

#[test]
fn assess_auto_picks_what_exists() {
    let json = stdout_json(&worker(&["assess", "--backend", "auto"]));
    let want = if auto_picks_cuda(0) { "cuda" } else { "cpu" };
    assert_eq!(json["backend"], want);
}

#[test]
fn assess_cuda_without_a_gpu_fails_in_one_line() {
    let output = worker(&["assess", "--backend", "cuda"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    match probe_cuda() {
        CudaAvailability::Unavailable { reason } => {
            assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
            assert!(output.stdout.is_empty());
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(stderr.starts_with("aitbc-worker: CUDA backend unavailable: ") && stderr.contains(&reason), "{stderr}");
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
        CudaAvailability::Available { .. } => {
            let json = stdout_json(&output);
            assert_eq!(json["backend"], "cuda");
            assert!(json["gpu"]["memory_gib"].as_f64().unwrap() > 0.0);
            assert!(json["performance_score"].as_f64().unwrap() > 0.0);
        }
    }
}

#[test]
fn exec_runs_a_spec_file() {
    let json = stdout_json(&worker(&["exec", &sample("gemm_inline.json"), "--backend", "cpu"]));
    assert_eq!(json["backend"], "cpu");
    assert_eq!(json["values"], serde_json::json!([58.0, 64.0, 139.0, 154.0]));
    assert!(json["device_ms"].as_u64().unwrap() >= 1);
}

#[test]
fn exec_reports_a_refused_job_in_one_line() {
    let output = worker(&["exec", &sample("kernel_saxpy.json"), "--backend", "cpu"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("does not run kernel jobs") && stderr.contains("retryable: false"), "{stderr}");
    let bad = worker(&["assess", "--backend", "tpu"]);
    assert_eq!(bad.status.code(), Some(2), "usage errors exit 2");
}
