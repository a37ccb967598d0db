//! What the worker measures for its listings' health reports (the provider's
//! `configure_monitoring`), and the provider's quality check on each job's result.
//!
//! Health: `nvidia-smi` when the machine has it (temperature, utilization, memory of GPU
//! `gpu_index`), else the host's memory from `/proc/meminfo` (a CPU worker's device is the CPU).
//! Each probe is bounded in time and output; a probe that fails says `gpu_ok: false` only when
//! `nvidia-smi` exists and cannot read the GPU.

use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A health probe (nvidia-smi) gets this long.
pub const PROBE_TIMEOUT_MS: u64 = 3_000;
/// A quality check gets this long per job; past it the job fails retryably.
pub const QUALITY_CHECK_TIMEOUT_MS: u64 = 30_000;
/// Output read from a probe or a check, at most.
pub const OUTPUT_BYTES_MAX: usize = 4_096;
/// A refusal's reason is cut to this many bytes.
pub const REASON_BYTES_MAX: usize = 200;

async fn run_bounded(argv: &[String], stdin: Option<Vec<u8>>, timeout: Duration) -> Result<(i32, String), String> {
    let (program, args) = argv.split_first().ok_or("an empty command")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    let run = async {
        if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A checker that does not read its input must not block us: ignore a broken pipe.
            let _ = pipe.write_all(&bytes).await;
            drop(pipe);
        }
        let mut out = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = stdout.take(OUTPUT_BYTES_MAX as u64).read_to_end(&mut out).await;
        }
        let status = child.wait().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((status.code().unwrap_or(-1), String::from_utf8_lossy(&out).into_owned()))
    };
    tokio::time::timeout(timeout, run).await.map_err(|_| format!("{program} took longer than {} ms", timeout.as_millis()))?
}

/// Parses one line of `nvidia-smi --query-gpu=temperature.gpu,utilization.gpu,memory.used,memory.total --format=csv,noheader,nounits`.
pub fn parse_nvidia_smi(line: &str) -> Option<Value> {
    let fields: Vec<u64> = line.split(',').map(|f| f.trim().parse::<u64>()).collect::<Result<_, _>>().ok()?;
    let [temp, util, used, total] = fields[..] else { return None };
    Some(json!({
        "gpu_ok": true,
        "gpu_temperature_c": temp.min(150),
        "gpu_utilization_bps": (util.min(100) * 100),
        "memory_used_mib": used.min(total),
        "memory_total_mib": total,
    }))
}

/// Parses `/proc/meminfo`: MemTotal and MemAvailable (kB) to MiB used and total.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok());
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    Some((total.saturating_sub(available) / 1024, total / 1024))
}

/// The device's health now (without job counts).
pub async fn measure(gpu_index: usize) -> Value {
    let argv: Vec<String> = ["nvidia-smi", "--query-gpu=temperature.gpu,utilization.gpu,memory.used,memory.total", "--format=csv,noheader,nounits", "-i"]
        .iter()
        .map(|s| s.to_string())
        .chain([gpu_index.to_string()])
        .collect();
    match run_bounded(&argv, None, Duration::from_millis(PROBE_TIMEOUT_MS)).await {
        Ok((0, out)) => {
            if let Some(report) = out.lines().next().and_then(parse_nvidia_smi) {
                return report;
            }
            json!({ "gpu_ok": false })
        }
        // nvidia-smi is there and cannot read the GPU: that is a GPU failure.
        Ok(_) => json!({ "gpu_ok": false }),
        // No nvidia-smi: a CPU machine; its memory is the host's.
        Err(_) => match std::fs::read_to_string("/proc/meminfo").ok().as_deref().and_then(parse_meminfo) {
            Some((used, total)) => json!({ "gpu_ok": true, "memory_used_mib": used, "memory_total_mib": total }),
            None => json!({ "gpu_ok": true }),
        },
    }
}

/// What a quality check says about a job's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Exit status 1: the provider's checker refuses the result (the job fails for good).
    Refuse(String),
    /// Any other failure of the checker itself (the job fails retryably: another run may pass).
    Broken(String),
}

/// Runs the provider's checker `argv` with `result` (JSON) on its stdin: exit 0 accepts, exit 1
/// refuses (its first line of output is the reason), anything else is a broken checker.
pub async fn quality_check(argv: &[String], result: &Value) -> Verdict {
    let input = serde_json::to_vec(result).expect("JSON serializes");
    match run_bounded(argv, Some(input), Duration::from_millis(QUALITY_CHECK_TIMEOUT_MS)).await {
        Ok((0, _)) => Verdict::Accept,
        Ok((1, out)) => {
            let mut reason = out.lines().next().unwrap_or("").trim().to_string();
            let mut cut = reason.len().min(REASON_BYTES_MAX);
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
            Verdict::Refuse(if reason.is_empty() { "no reason given".into() } else { reason })
        }
        Ok((code, _)) => Verdict::Broken(format!("quality check exited with {code}")),
        Err(e) => Verdict::Broken(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_parse_what_the_tools_print() {
        assert_eq!(parse_nvidia_smi("65, 87, 1024, 81559").unwrap()["gpu_utilization_bps"], 8_700);
        assert!(parse_nvidia_smi("[N/A], 87, 1, 2").is_none());
        assert_eq!(parse_meminfo("MemTotal:       2048000 kB\nMemFree: 1 kB\nMemAvailable:   1024000 kB\n"), Some((1000, 2000)));
        assert_eq!(parse_meminfo("nothing"), None);
    }

    #[tokio::test]
    async fn a_check_accepts_refuses_or_is_broken_by_its_exit_status() {
        let sh = |script: &str| vec!["sh".to_string(), "-c".to_string(), script.to_string()];
        let result = json!({"job_id": "j"});
        assert_eq!(quality_check(&sh("cat >/dev/null; exit 0"), &result).await, Verdict::Accept);
        assert_eq!(quality_check(&sh("grep -q '\"job_id\":\"j\"' && echo 'too slow' && exit 1"), &result).await, Verdict::Refuse("too slow".into()));
        assert!(matches!(quality_check(&sh("exit 3"), &result).await, Verdict::Broken(_)));
        assert!(matches!(quality_check(&["/nonexistent/checker".to_string()], &result).await, Verdict::Broken(_)));
    }
}
