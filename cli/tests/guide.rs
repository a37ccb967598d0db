//! The guides' commands, exactly as written, against `aitbc up` started in a temporary
//! directory; then the bad inputs (clear one-line errors, the right exit codes, nothing
//! changed); Ctrl-C and restart; and `aitbc demo`, whose summary must balance.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const AITBC: &str = env!("CARGO_BIN_EXE_aitbc");

fn sample(path: &str) -> String {
    format!("{}/../samples/{path}", env!("CARGO_MANIFEST_DIR"))
}

struct Up {
    child: Child,
    api: String,
    _dir: tempfile::TempDir,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_until(mut check: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn spawn_up(port: u16, data: &Path, home: &Path) -> Child {
    let child = Command::new(AITBC)
        .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .env("AITBC_HOME", home)
        // Settle a receipt a second after it completes, so that the test sees it settled soon.
        .env("AITBC_SETTLE_GRACE_S", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(|| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(), "aitbc up to listen");
    child
}

fn up(provider_home: &Path) -> Up {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = spawn_up(port, &dir.path().join("data"), provider_home);
    Up { child, api: format!("http://127.0.0.1:{port}"), _dir: dir }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn aitbc(api: &str, home: &Path, args: &[&str]) -> Out {
    let out = Command::new(AITBC).args(args).env("AITBC_API", api).env("AITBC_HOME", home).output().unwrap();
    Out { code: out.status.code().unwrap_or(-1), stdout: String::from_utf8_lossy(&out.stdout).into(), stderr: String::from_utf8_lossy(&out.stderr).into() }
}

fn ok(api: &str, home: &Path, args: &[&str]) -> String {
    let out = aitbc(api, home, args);
    assert_eq!(out.code, 0, "aitbc {args:?} failed: {}", out.stderr);
    out.stdout
}

fn one_line_error(out: &Out, code: i32, contains: &str) {
    assert_eq!(out.code, code, "stdout {} stderr {}", out.stdout, out.stderr);
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "one line: {:?}", out.stderr);
    assert!(out.stderr.starts_with("aitbc: "), "{:?}", out.stderr);
    assert!(out.stderr.contains(contains), "{:?} should mention {contains:?}", out.stderr);
}

fn gpu_id_in(text: &str) -> String {
    text.split_whitespace().find(|w| w.starts_with("gpu-")).expect("a GPU id").to_string()
}

fn signal(pid: u32, number: i32) {
    let status = Command::new("kill").arg(format!("-{number}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success());
}

#[test]
fn the_guides_commands_work_as_written() {
    let homes = tempfile::tempdir().unwrap();
    let provider: PathBuf = homes.path().join("provider");
    let client: PathBuf = homes.path().join("client");
    let up = up(&provider);
    let api = up.api.as_str();

    // GPU Monetization Guide.
    assert!(ok(api, &provider, &["init"]).contains("Initialized provider account ait1"));
    let registered = ok(api, &provider, &["marketplace", "gpu", "register", "--name", "My-GPU", "--memory", "24", "--cuda-version", "12.1", "--base-price", "0.05"]);
    assert!(registered.contains("My-GPU") && registered.contains("us-west") && registered.contains("0.05"), "{registered}");
    let gpu = gpu_id_in(&registered);
    let listed = ok(api, &provider, &["marketplace", "gpu", "list", "--region", "us-west"]);
    assert!(listed.contains(&gpu) && listed.contains("My-GPU") && listed.contains("market-balance"), "{listed}");
    let updated = ok(api, &provider, &["marketplace", "gpu", "update", "--gpu-id", &gpu, "--strategy", "peak-maximizer"]);
    assert!(updated.contains("peak-maximizer"));
    let listed = ok(api, &provider, &["marketplace", "gpu", "list", "--region", "us-west"]);
    assert!(listed.contains("peak-maximizer"), "{listed}");
    assert!(ok(api, &provider, &["marketplace", "gpu", "--help"]).contains("register"));
    let queued = ok(api, &provider, &["marketplace", "gpu", "queue", "--gpu-id", &gpu, "--max-queue-size", "20", "--priority", "weighted-fair-share", "--preemption", "graceful", "--attempts", "3"]);
    assert!(queued.contains("at most 20 jobs waiting, weighted_fair_share order, preemption graceful, attempts 3"), "{queued}");
    one_line_error(&aitbc(api, &provider, &["marketplace", "gpu", "queue", "--gpu-id", &gpu, "--max-queue-size", "0"]), 2, "max_queue_size");
    wait_until(|| ok(api, &provider, &["marketplace", "status", "--gpu-id", &gpu]).contains("Online:            true"), "the local worker");

    // Payments and Receipts: a client pays for a job; the receipt lists and verifies.
    assert!(ok(api, &client, &["init", "--role", "client"]).contains("Initialized client account"));
    ok(api, &client, &["wallet", "deposit", "20"]);
    let quoted = ok(api, &client, &["quote", "--units", "2.5", "--region", "us-west"]);
    assert!(quoted.contains("Maximum price"), "{quoted}");
    let submitted = ok(api, &client, &["job", "submit", "--spec", &sample("jobs/vector_add.json"), "--units", "2.5", "--region", "us-west"]);
    let job = submitted.split_whitespace().find(|w| w.starts_with("job-")).unwrap().to_string();
    wait_until(|| ok(api, &client, &["job", "status", &job]).contains("settled"), "the job to complete and settle");
    assert!(ok(api, &client, &["job", "result", &job]).contains("Checksum"));
    let receipts = ok(api, &client, &["receipts"]);
    let receipt = receipts.split_whitespace().find(|w| w.starts_with("rcpt-")).expect("a receipt").to_string();
    assert!(receipts.contains(&job));
    let shown = ok(api, &client, &["receipt", &receipt]);
    // No GPU here: the local worker ran it on the CPU, and the receipt says so.
    assert!(shown.contains("cpu_seconds") && shown.contains("Ed25519"), "{shown}");
    let verified = ok(api, &client, &["receipt", "verify", &receipt]);
    assert!(verified.contains("verified") && verified.contains("countersignature by the marketplace"), "{verified}");
    let offline = ok(api, &client, &["receipt", "verify", &sample("receipts/receipt.json"), "--keys", &sample("receipts/keys.json")]);
    assert!(offline.contains("2.5 gpu_seconds x 2 = 5 AITBC"), "{offline}");

    // The client rates its settled job once; the provider's reputation counts it.
    one_line_error(&aitbc(api, &client, &["job", "rate", &job, "--rating", "9"]), 2, "rating");
    assert!(ok(api, &client, &["job", "rate", &job, "--rating", "5"]).contains("5 of 5"));
    one_line_error(&aitbc(api, &client, &["job", "rate", &job, "--rating", "4", "--idempotency-key", "again"]), 1, "rated already");
    let reputation = ok(api, &provider, &["marketplace", "reputation"]);
    assert!(reputation.contains("5.00 of 5 (1 ratings)") && reputation.contains("1 completed, 0 failed") && reputation.contains(&gpu), "{reputation}");

    // The provider sees it in earnings and status.
    let earnings = ok(api, &provider, &["marketplace", "earnings", "--gpu-id", &gpu]);
    assert!(earnings.contains("Jobs:           1"), "{earnings}");
    let status = ok(api, &provider, &["marketplace", "status", "--gpu-id", &gpu]);
    assert!(status.contains("Completed jobs:    1"), "{status}");

    // A batch at the GPU's batch discount: one quote, three jobs, each held on its own.
    let discounted = ok(api, &provider, &["marketplace", "gpu", "update", "--gpu-id", &gpu, "--batch-min-size", "3", "--batch-discount", "25"]);
    assert!(discounted.contains("Batches of 3 jobs or more: 25% off"), "{discounted}");
    let batch = ok(api, &client, &["job", "batch", "--spec", &sample("jobs/vector_add.json"), "--copies", "3", "--units", "1", "--gpu-id", &gpu]);
    assert!(batch.contains("Batch of 3") && batch.contains("25% batch discount"), "{batch}");
    one_line_error(&aitbc(api, &client, &["job", "batch", "--spec", &sample("jobs/vector_add.json"), "--copies", "101", "--units", "1", "--gpu-id", &gpu]), 2, "specs");


    // Specialized model hosting: the GPU prices a model off the rate card, then stops.
    let priced = ok(api, &provider, &["marketplace", "gpu", "update", "--gpu-id", &gpu, "--model-price", "custom-medical-llm=0.2"]);
    assert!(priced.contains("Model price custom-medical-llm: 0.2 AITBC/GPU-hour"), "{priced}");
    one_line_error(&aitbc(api, &provider, &["marketplace", "gpu", "update", "--gpu-id", &gpu, "--model-price", "custom-medical-llm=0"]), 2, "model_prices");
    one_line_error(&aitbc(api, &provider, &["marketplace", "gpu", "update", "--gpu-id", &gpu, "--model-price", "custom-medical-llm"]), 2, "NAME=PRICE");
    let shown: serde_json::Value = serde_json::from_str(&ok(api, &provider, &["marketplace", "gpu", "list", "--region", "us-west", "--json"])).unwrap();
    assert_eq!(shown[0]["model_prices"], serde_json::json!({"custom-medical-llm": "0.2"}), "{shown}");
    let removed = ok(api, &provider, &["marketplace", "gpu", "update", "--gpu-id", &gpu, "--remove-model-price", "custom-medical-llm"]);
    assert!(removed.contains("Model prices: none"), "{removed}");
    assert!(ok(api, &provider, &["marketplace", "gpu", "update", "--help"]).contains("--model-price <NAME=PRICE>"));

    // Bad flags, unknown ids, an unreachable API: one line, exit 2 for usage, 1 otherwise.
    one_line_error(&aitbc(api, &provider, &["marketplace", "gpu", "register", "--name", "x", "--memory", "lots", "--cuda-version", "12.1", "--base-price", "1"]), 2, "--memory");
    one_line_error(&aitbc(api, &provider, &["marketplace", "gpu", "register", "--name", "x", "--memory", "24", "--cuda-version", "12.1", "--base-price", "-1"]), 2, "base_price");
    one_line_error(&aitbc(api, &provider, &["marketplace", "gpu", "update", "--gpu-id", &gpu, "--strategy", "get-rich"]), 2, "get-rich");
    one_line_error(&aitbc(api, &provider, &["marketplace", "frobnicate"]), 2, "frobnicate");
    one_line_error(&aitbc(api, &provider, &["marketplace", "status", "--gpu-id", "gpu-doesnotexist"]), 1, "not found");
    one_line_error(&aitbc(api, &provider, &["marketplace", "status", "--gpu-id", "nope"]), 2, "gpu_id");
    one_line_error(&aitbc(api, &client, &["marketplace", "gpu", "update", "--gpu-id", &gpu, "--strategy", "dynamic"]), 1, "provider key");
    one_line_error(&aitbc(api, &client, &["receipt", "verify", "garbage"]), 2, "garbage");
    one_line_error(&aitbc("http://127.0.0.1:9", &provider, &["marketplace", "gpu", "list", "--region", "us-west"]), 1, "http://127.0.0.1:9");
    let nobody = homes.path().join("nobody");
    one_line_error(&aitbc(api, &nobody, &["wallet", "balance"]), 2, "aitbc init");
    // Nothing above changed the listing.
    let listed_after = ok(api, &provider, &["marketplace", "gpu", "list", "--region", "us-west", "--json"]);
    let listings: serde_json::Value = serde_json::from_str(&listed_after).unwrap();
    assert_eq!(listings.as_array().unwrap().len(), 1);
    assert_eq!(listings[0]["strategy"], "peak-maximizer");
    assert_eq!(listings[0]["base_price"], "0.05");
}

#[test]
fn up_stops_cleanly_on_ctrl_c_and_a_restart_keeps_the_data() {
    let homes = tempfile::tempdir().unwrap();
    let provider = homes.path().join("provider");
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let api = format!("http://127.0.0.1:{port}");
    let first = spawn_up(port, data.path(), &provider);
    ok(&api, &provider, &["init"]);
    let gpu = gpu_id_in(&ok(&api, &provider, &["marketplace", "gpu", "register", "--name", "Keep-Me", "--memory", "8", "--cuda-version", "12.4", "--base-price", "0.1"]));
    signal(first.id(), 2); // SIGINT, as Ctrl-C sends
    let output = first.wait_with_output().unwrap();
    assert!(output.status.success(), "aitbc up exits 0 on Ctrl-C");
    assert!(String::from_utf8_lossy(&output.stdout).contains("stopped"));
    let second = spawn_up(port, data.path(), &provider);
    let listed = ok(&api, &provider, &["marketplace", "gpu", "list", "--region", "us-west"]);
    assert!(listed.contains(&gpu) && listed.contains("Keep-Me"), "{listed}");
    signal(second.id(), 15);
    assert!(second.wait_with_output().unwrap().status.success(), "aitbc up exits 0 on SIGTERM");
}

#[test]
fn the_demo_exits_zero_and_its_summary_balances() {
    let home = tempfile::tempdir().unwrap();
    let out = aitbc("http://127.0.0.1:9", home.path(), &["demo", "--jobs", "9"]);
    assert_eq!(out.code, 0, "demo failed: {}", out.stderr);
    assert!(out.stdout.contains("Summary"), "{}", out.stdout);
    // Nine compute jobs and the demo's three questions to the default model.
    assert!(out.stdout.contains("12 completed") || out.stdout.contains("12 settled"), "{}", out.stdout);
    assert!(out.stdout.contains("Receipts verified:   12 of 12"), "{}", out.stdout);
    assert_eq!(out.stdout.matches("asked smollm2:135m").count(), 3, "{}", out.stdout);
    assert!(out.stdout.contains("= 1000 AITBC deposited: balanced"), "{}", out.stdout);
    let json = aitbc("http://127.0.0.1:9", home.path(), &["demo", "--jobs", "3", "--json"]);
    assert_eq!(json.code, 0, "{}", json.stderr);
    let summary: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(summary["conservation"]["holds"], true);
    assert_eq!(summary["receipts_verified"], 3 + 3);
}
