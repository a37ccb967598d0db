//! The worker loop: long-poll the listings' queues for as many jobs as there are free slots,
//! claim each through the API, run it on a backend while a timer extends the job's lease and
//! the message's visibility, sign the receipt with the provider's key, complete through the API
//! and delete the message. On shutdown stop receiving, let running jobs finish within the grace
//! period, and release the rest (API release and visibility zero) so another worker takes them.
//!
//! The API is the only authority: a message only says "job X may be waiting". A claim that is
//! refused (the job is taken, done or gone) deletes the message, so duplicate deliveries cost
//! one refused claim and nothing else.

use crate::backend::{Backend, RunLimits};
use crate::models::Models;
use aitbc_client::{Client, ClientError};
use aitbc_core::jobspec::{JobKind, JobOutput, JobSpec};
use aitbc_core::money::{GpuMillis, Rate};
use aitbc_core::receipt::{JobTerms, Metered, ReceiptBody, UnitType};
use aitbc_core::signing::NamedSigningKey;
use aitbc_core::values::{Address, JobId, ListingId, ModelName, WorkerId};
use aitbc_store::{Message, Queue};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Concurrent jobs per worker, at most.
pub const CONCURRENT_JOBS_MAX: usize = 64;
/// Listings one worker serves, at most.
pub const LISTINGS_MAX: usize = 64;
/// Backoff after an API or queue error: doubles from the minimum up to the maximum.
pub const BACKOFF_MS_MIN: u64 = 100;
pub const BACKOFF_MS_MAX: u64 = 5_000;
/// Attempts to deliver a completion through transient API errors before giving the job up.
pub const COMPLETE_ATTEMPTS_MAX: u32 = 8;
/// A heartbeat is sent at most every this often, at least.
pub const HEARTBEAT_INTERVAL_MS_MIN: u64 = 100;
/// The listing heartbeat (worker liveness) is sent this often.
pub const LISTING_HEARTBEAT_MS: u64 = 10_000;

/// What the worker is told to do.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub worker_id: WorkerId,
    pub listings: Vec<ListingId>,
    pub max_concurrent_jobs: usize,
    /// A claim's lease and a message's visibility, renewed by heartbeats.
    pub lease_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// How long a receive waits for a message (SQS: at most 20 s).
    pub poll_wait_ms: u64,
    /// After a shutdown signal, running jobs get this long to finish before they are released.
    pub grace_ms: u64,
}

impl AgentConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.listings.is_empty() || self.listings.len() > LISTINGS_MAX {
            return Err(format!("serve 1..={LISTINGS_MAX} listings"));
        }
        if !(1..=CONCURRENT_JOBS_MAX).contains(&self.max_concurrent_jobs) {
            return Err(format!("max_concurrent_jobs must be 1..={CONCURRENT_JOBS_MAX}"));
        }
        if self.heartbeat_interval_ms < HEARTBEAT_INTERVAL_MS_MIN || self.heartbeat_interval_ms * 2 > self.lease_ms {
            return Err("heartbeat_interval_ms must be at least 100 and at most half of lease_ms".into());
        }
        if self.poll_wait_ms > aitbc_store::queue::RECEIVE_WAIT_MS_MAX {
            return Err(format!("poll_wait_ms must be at most {}", aitbc_store::queue::RECEIVE_WAIT_MS_MAX));
        }
        Ok(())
    }
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub completed: u64,
    pub failed: u64,
    pub released: u64,
    pub refused_claims: u64,
}

/// A job in hand: where its message is, so shutdown can release it.
#[derive(Clone)]
struct InFlight {
    queue: String,
    receipt_handle: String,
}

struct Shared {
    client: Client,
    queue: Arc<dyn Queue>,
    key: NamedSigningKey,
    config: AgentConfig,
    backends: Mutex<Vec<Box<dyn Backend>>>,
    /// The language models this worker serves (`text_generation` jobs).
    models: Arc<Models>,
    in_flight: Mutex<HashMap<JobId, InFlight>>,
    stats: Mutex<Stats>,
    /// Per listing queue: jobs completed and failed since its last health report.
    health_counts: Mutex<HashMap<String, (u32, u32)>>,
    /// The provider's quality check (a command: the result JSON on stdin, exit 0 to accept).
    quality_check: Option<Vec<String>>,
    /// A config file whose `quality_check` is read again for each result (`config::quality_check_in`).
    quality_check_file: Option<std::path::PathBuf>,
    /// The GPU the health probe reads.
    gpu_index: usize,
}

/// The worker: an API client, the queues, the provider's signing key and one backend per slot.
pub struct Agent {
    shared: Arc<Shared>,
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((BACKOFF_MS_MIN << attempt.min(16)).min(BACKOFF_MS_MAX))
}

fn refused(e: &ClientError) -> bool {
    matches!(e.status(), Some(400..=499)) && !e.is_transient()
}

impl Agent {
    /// `backends` holds one backend per concurrent slot.
    pub fn new(client: Client, queue: Arc<dyn Queue>, key: NamedSigningKey, config: AgentConfig, backends: Vec<Box<dyn Backend>>) -> Result<Self, String> {
        config.validate()?;
        if backends.len() != config.max_concurrent_jobs {
            return Err(format!("need {} backends, one per slot; got {}", config.max_concurrent_jobs, backends.len()));
        }
        let shared = Shared {
            client,
            queue,
            key,
            config,
            backends: Mutex::new(backends),
            models: Arc::new(Models::default()),
            in_flight: Mutex::new(HashMap::new()),
            stats: Mutex::new(Stats::default()),
            health_counts: Mutex::new(HashMap::new()),
            quality_check: None,
            quality_check_file: None,
            gpu_index: 0,
        };
        Ok(Self { shared: Arc::new(shared) })
    }

    /// Serves `models` too: text generation on the models loaded, which heartbeats report.
    pub fn with_models(mut self, models: Arc<Models>) -> Self {
        Arc::get_mut(&mut self.shared).expect("not yet running").models = models;
        self
    }

    /// Runs the provider's quality check on every job's result before completing it: `argv`
    /// gets the result as JSON on stdin; exit 0 accepts, exit 1 refuses (the job fails and its
    /// hold is voided), any other outcome fails it retryably (`health::quality_check`).
    pub fn with_quality_check(mut self, argv: Vec<String>) -> Self {
        assert!(!argv.is_empty(), "a quality check is a command");
        Arc::get_mut(&mut self.shared).expect("not yet running").quality_check = Some(argv);
        self
    }

    /// Runs the quality check that the TOML file at `path` names (`quality_check`), read again
    /// for each result: a check added, changed or removed there applies to the next result. A
    /// missing file or key is no check; an unreadable file or a bad command fails the job
    /// retryably (the provider's check is never skipped for a file it cannot read).
    pub fn with_quality_check_file(mut self, path: std::path::PathBuf) -> Self {
        Arc::get_mut(&mut self.shared).expect("not yet running").quality_check_file = Some(path);
        self
    }

    /// The GPU whose health the worker reports.
    pub fn with_gpu_index(mut self, gpu_index: usize) -> Self {
        Arc::get_mut(&mut self.shared).expect("not yet running").gpu_index = gpu_index;
        self
    }

    /// Runs until `shutdown` turns true, then drains within the grace period.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Result<Stats, String> {
        let s = &self.shared;
        let queues = self.resolve_queues().await?;
        let slots = Arc::new(Semaphore::new(s.config.max_concurrent_jobs));
        let mut tasks = JoinSet::new();
        let mut next_listing_heartbeat = Instant::now();
        // Per listing: the health interval its provider asks for (from the last heartbeat's
        // answer) and when the next report is due.
        let mut health_due: HashMap<ListingId, (Duration, Instant)> = HashMap::new();
        let mut turn = 0usize;
        let mut errors = 0u32;
        tracing::info!(worker = %s.config.worker_id, listings = queues.len(), slots = s.config.max_concurrent_jobs, "worker started");
        while !*shutdown.borrow() {
            if Instant::now() >= next_listing_heartbeat {
                let models: Vec<String> = s.models.names().iter().map(ToString::to_string).collect();
                for (gpu_id, queue_name) in &queues {
                    let due = health_due.get(gpu_id).is_some_and(|(_, at)| Instant::now() >= *at);
                    let health = if due { Some(health_report(s, queue_name).await) } else { None };
                    match s.client.listing_heartbeat_with_health(gpu_id.as_str(), s.config.worker_id.as_str(), Some(&models), health.as_ref()).await {
                        Ok(ack) => match ack["health_interval_s"].as_u64() {
                            Some(seconds) => {
                                let every = Duration::from_secs(seconds.clamp(1, 86_400));
                                // The first report goes with the next heartbeat; then one every
                                // `every` (heartbeats come every LISTING_HEARTBEAT_MS, so a
                                // report is at most that late).
                                let next = match health_due.get(gpu_id) {
                                    Some((_, at)) if !due => *at,
                                    Some(_) => Instant::now() + every,
                                    None => Instant::now(),
                                };
                                health_due.insert(gpu_id.clone(), (every, next));
                            }
                            None => {
                                health_due.remove(gpu_id);
                            }
                        },
                        Err(e) => {
                            // The counts of an undelivered report go with the next one.
                            if let Some(report) = &health {
                                restore_counts(s, queue_name, report);
                            }
                            tracing::warn!(error = %e, gpu_id = %gpu_id, "listing heartbeat failed")
                        }
                    }
                }
                next_listing_heartbeat = Instant::now() + Duration::from_millis(LISTING_HEARTBEAT_MS);
            }
            while tasks.try_join_next().is_some() {}
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = tasks.join_next() => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let (_, queue_name) = &queues[turn % queues.len()];
            turn += 1;
            let wait = Duration::from_millis(s.config.poll_wait_ms);
            let visibility = Duration::from_millis(s.config.lease_ms);
            let received = tokio::select! {
                r = s.queue.receive(queue_name, free.min(aitbc_store::RECEIVE_MESSAGES_MAX), wait, visibility) => r,
                _ = shutdown.changed() => break,
            };
            let messages = match received {
                Ok(m) => {
                    errors = 0;
                    m
                }
                Err(e) => {
                    tracing::warn!(error = %e, queue = %queue_name, "receive failed");
                    errors += 1;
                    tokio::time::sleep(backoff(errors)).await;
                    continue;
                }
            };
            for message in messages {
                let permit = slots.clone().try_acquire_owned().expect("received no more than the free slots");
                let shared = self.shared.clone();
                let queue_name = queue_name.clone();
                tasks.spawn(async move {
                    handle(&shared, &queue_name, message).await;
                    drop(permit);
                });
            }
        }
        self.drain(tasks).await;
        let stats = s.stats.lock().expect("stats").clone();
        tracing::info!(?stats, "worker stopped");
        Ok(stats)
    }

    /// Each listing's queue, from the API.
    async fn resolve_queues(&self) -> Result<Vec<(ListingId, String)>, String> {
        let mut out = Vec::with_capacity(self.shared.config.listings.len());
        for gpu_id in &self.shared.config.listings {
            let listing = self.shared.client.listing(gpu_id.as_str()).await.map_err(|e| format!("GPU listing {gpu_id}: {e}"))?;
            let queue = listing["queue"].as_str().ok_or_else(|| format!("GPU listing {gpu_id} has no queue"))?;
            out.push((gpu_id.clone(), queue.to_string()));
        }
        Ok(out)
    }

    /// Lets running jobs finish within the grace period, then releases what is left.
    async fn drain(&self, mut tasks: JoinSet<()>) {
        let s = &self.shared;
        let deadline = tokio::time::sleep(Duration::from_millis(s.config.grace_ms));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = tasks.join_next() => if next.is_none() { return },
                _ = &mut deadline => break,
            }
        }
        let left: Vec<(JobId, InFlight)> = s.in_flight.lock().expect("in flight").drain().collect();
        for (job_id, flight) in left {
            match s.client.job_action(job_id.as_str(), "release", s.config.worker_id.as_str(), None).await {
                Ok(_) => s.stats.lock().expect("stats").released += 1,
                Err(e) => tracing::warn!(error = %e, job_id = %job_id, "release failed; the lease will lapse"),
            }
            if let Err(e) = s.queue.extend_visibility(&flight.queue, &flight.receipt_handle, Duration::ZERO).await {
                tracing::debug!(error = %e, "message visibility not reset");
            }
        }
        tasks.abort_all();
    }
}

/// Claims, runs and completes the job a message names.
async fn handle(s: &Arc<Shared>, queue: &str, message: Message) {
    let job_id = match serde_json::from_str::<Value>(&message.body).ok().and_then(|v| v["job_id"].as_str().and_then(|j| JobId::parse(j).ok())) {
        Some(id) => id,
        None => {
            tracing::warn!(body = %message.body, "not a job message; deleting it");
            let _ = s.queue.delete(queue, &message.receipt_handle).await;
            return;
        }
    };
    let worker = s.config.worker_id.as_str();
    let job = match s.client.job_action(job_id.as_str(), "claim", worker, Some(s.config.lease_ms)).await {
        Ok(job) => job,
        Err(e) if refused(&e) => {
            // Taken, finished or gone: this delivery is a duplicate or stale.
            s.stats.lock().expect("stats").refused_claims += 1;
            tracing::debug!(job_id = %job_id, error = %e, "claim refused; deleting the message");
            let _ = s.queue.delete(queue, &message.receipt_handle).await;
            return;
        }
        Err(e) => {
            // The message stays; it comes back when its visibility lapses.
            tracing::warn!(job_id = %job_id, error = %e, "claim failed");
            return;
        }
    };
    // A listing that orders its queue answers with the job first in that order, which may be
    // another than the message named (the market puts a message back for that one).
    let job_id = job["job_id"].as_str().and_then(|j| JobId::parse(j).ok()).unwrap_or(job_id);
    let flight = InFlight { queue: queue.to_string(), receipt_handle: message.receipt_handle.clone() };
    s.in_flight.lock().expect("in flight").insert(job_id.clone(), flight.clone());
    let _ = s.client.job_action(job_id.as_str(), "start", worker, None).await;
    let heartbeat = tokio::spawn(heartbeats(s.clone(), job_id.clone(), flight.clone()));
    let began = Instant::now();
    let mut outcome = run_job(s, &job).await;
    if let Ok((output, _)) = &outcome {
        let command = match (&s.quality_check, &s.quality_check_file) {
            (Some(argv), _) => Ok(Some(argv.clone())),
            (None, Some(path)) => crate::config::quality_check_in(path),
            (None, None) => Ok(None),
        };
        let verdict = match command {
            Ok(None) => crate::health::Verdict::Accept,
            Ok(Some(argv)) => crate::health::quality_check(&argv, &quality_input(&job, output, began.elapsed())).await,
            Err(why) => crate::health::Verdict::Broken(why),
        };
        match verdict {
            crate::health::Verdict::Accept => {}
            crate::health::Verdict::Refuse(reason) => outcome = Err((format!("quality check refused the result: {reason}"), false)),
            crate::health::Verdict::Broken(why) => outcome = Err((format!("quality check failed: {why}"), true)),
        }
    }
    heartbeat.abort();
    let finished = match outcome {
        Ok((output, started_s)) => {
            let done = complete(s, &job, output, started_s).await;
            if done.is_ok() {
                s.health_counts.lock().expect("counts").entry(queue.to_string()).or_default().0 += 1;
            }
            done
        }
        Err((reason, retryable)) => {
            let result = s.client.fail_job(job_id.as_str(), worker, &reason, retryable).await;
            if result.is_ok() {
                s.stats.lock().expect("stats").failed += 1;
                s.health_counts.lock().expect("counts").entry(queue.to_string()).or_default().1 += 1;
            }
            result.map(|_| ()).map_err(|e| e.to_string())
        }
    };
    // Only a job that is no longer ours leaves the in-flight set: shutdown releases the rest.
    if s.in_flight.lock().expect("in flight").remove(&job_id).is_some() {
        match finished {
            Ok(()) => {
                let _ = s.queue.delete(queue, &message.receipt_handle).await;
            }
            Err(e) => tracing::warn!(job_id = %job_id, error = %e, "job not finished through the API; its lease will lapse"),
        }
    }
}

/// A listing's health report: the device measured now, and the jobs its queue's jobs ended
/// since the last report (taken: they are counted once).
async fn health_report(s: &Arc<Shared>, queue: &str) -> Value {
    let mut report = crate::health::measure(s.gpu_index).await;
    let (completed, failed) = s.health_counts.lock().expect("counts").remove(queue).unwrap_or_default();
    report["jobs_completed"] = json!(completed.min(aitbc_core::health::REPORT_JOBS_MAX));
    report["jobs_failed"] = json!(failed.min(aitbc_core::health::REPORT_JOBS_MAX));
    report
}

fn restore_counts(s: &Arc<Shared>, queue: &str, report: &Value) {
    let count = |name: &str| report[name].as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
    let mut counts = s.health_counts.lock().expect("counts");
    let entry = counts.entry(queue.to_string()).or_default();
    entry.0 = entry.0.saturating_add(count("jobs_completed"));
    entry.1 = entry.1.saturating_add(count("jobs_failed"));
}

/// What a quality check reads: the job's identity and limits, how long it ran, its output.
/// `error_rate` is the share of the output the worker knows to be wrong: 0 for a result the
/// backend returned (a failed run never reaches the check).
fn quality_input(job: &Value, output: &JobOutput, ran: Duration) -> Value {
    json!({
        "job_id": job["job_id"],
        "kind": job["spec"]["kind"],
        "model": job["model"],
        "completion_time": ran.as_secs_f64(),
        "timeout": job["timeout_ms"].as_u64().unwrap_or(aitbc_core::jobspec::JOB_TIMEOUT_MS_DEFAULT) as f64 / 1_000.0,
        "error_rate": 0.0,
        "output": output,
    })
}

/// Extends the job's lease and the message's visibility until aborted.
async fn heartbeats(s: Arc<Shared>, job_id: JobId, flight: InFlight) {
    let every = Duration::from_millis(s.config.heartbeat_interval_ms);
    loop {
        tokio::time::sleep(every).await;
        match s.client.job_action(job_id.as_str(), "heartbeat", s.config.worker_id.as_str(), Some(s.config.lease_ms)).await {
            // Graceful preemption: a job of a higher tier waits on the full listing. Hand this
            // one back (queued again without using an attempt); its run's result is dropped.
            Ok(answer) if answer["preempt"] == true => {
                if s.in_flight.lock().expect("in flight").remove(&job_id).is_some() {
                    match s.client.job_action(job_id.as_str(), "release", s.config.worker_id.as_str(), None).await {
                        Ok(_) => {
                            s.stats.lock().expect("stats").released += 1;
                            let _ = s.queue.delete(&flight.queue, &flight.receipt_handle).await;
                        }
                        Err(e) => tracing::warn!(job_id = %job_id, error = %e, "release on preemption failed; the lease will lapse"),
                    }
                }
                return;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(job_id = %job_id, error = %e, "heartbeat failed"),
        }
        if let Err(e) = s.queue.extend_visibility(&flight.queue, &flight.receipt_handle, Duration::from_millis(s.config.lease_ms)).await {
            tracing::debug!(job_id = %job_id, error = %e, "visibility not extended");
        }
    }
}

fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs() as i64
}

/// Runs the job's spec on a free backend, off the async threads.
async fn run_job(s: &Arc<Shared>, job: &Value) -> Result<(JobOutput, i64), (String, bool)> {
    let spec: JobSpec = serde_json::from_value(job["spec"].clone()).map_err(|e| (format!("unreadable spec: {e}"), false))?;
    let timeout_ms = job["timeout_ms"].as_u64().unwrap_or(aitbc_core::jobspec::JOB_TIMEOUT_MS_DEFAULT);
    if spec.kind() == JobKind::TextGeneration {
        let models = s.models.clone();
        let started_s = now_s();
        // The text goes out as it is produced, in chunks, for clients' streams.
        let (pieces, received) = tokio::sync::mpsc::unbounded_channel::<String>();
        let job_id = job["job_id"].as_str().unwrap_or_default().to_string();
        let streamer = tokio::spawn(stream_chunks(s.clone(), job_id, received));
        let result = tokio::task::spawn_blocking(move || {
            let limits = RunLimits { timeout_ms, ..RunLimits::default() };
            models.run(&spec, &limits, &mut |piece| {
                let _ = pieces.send(piece.to_string());
                std::ops::ControlFlow::Continue(())
            })
        })
        .await
        .map_err(|e| (format!("inference task panicked: {e}"), true))?;
        // Every chunk is out before the completion, so a stream never sees the end first.
        let _ = streamer.await;
        return result.map(|output| (output, started_s)).map_err(|e| (format!("{e} ({})", e.code()), e.retryable()));
    }
    let mut backend = s.backends.lock().expect("backends").pop().expect("a backend per slot");
    let started_s = now_s();
    let (backend, result) = tokio::task::spawn_blocking(move || {
        let limits = RunLimits { timeout_ms, ..RunLimits::default() };
        let result = backend.run(&spec, &limits);
        (backend, result)
    })
    .await
    .map_err(|e| (format!("backend task panicked: {e}"), true))?;
    s.backends.lock().expect("backends").push(backend);
    result.map(|output| (output, started_s)).map_err(|e| (format!("{e} ({})", e.code()), e.retryable()))
}

/// Sends the text a model produces as numbered chunks (`POST /v1/jobs/{id}/chunks`) until the
/// generation ends: the first piece at once (a stream's time to first token waits on it), then
/// whatever gathered while the previous chunk was being sent, so a fast model makes few large
/// chunks and a slow one many small ones. Best effort: a chunk that cannot be sent is skipped,
/// since the completion carries the whole text anyway.
async fn stream_chunks(s: Arc<Shared>, job_id: String, mut pieces: tokio::sync::mpsc::UnboundedReceiver<String>) {
    let mut seq: u32 = 0;
    let mut pending = String::new();
    while let Some(piece) = pieces.recv().await {
        pending.push_str(&piece);
        while let Ok(piece) = pieces.try_recv() {
            pending.push_str(&piece);
        }
        while !pending.is_empty() && seq < aitbc_core::jobspec::STREAM_CHUNKS_MAX {
            let mut end = pending.len().min(aitbc_core::jobspec::STREAM_CHUNK_BYTES_MAX);
            while !pending.is_char_boundary(end) {
                end -= 1;
            }
            let text: String = pending.drain(..end).collect();
            if let Err(e) = s.client.append_chunk(&job_id, s.config.worker_id.as_str(), seq, &text).await {
                tracing::debug!(job_id = %job_id, seq, error = %e, "chunk not sent");
            }
            seq += 1;
        }
        pending.clear();
    }
}

/// Signs the receipt for `output` and completes the job, retrying transient API errors.
async fn complete(s: &Arc<Shared>, job: &Value, output: JobOutput, started_s: i64) -> Result<(), String> {
    let field = |name: &str| job[name].as_str().ok_or_else(|| format!("job lacks {name}"));
    let parse_err = |e: aitbc_core::values::ValueError| e.to_string();
    let units_max = GpuMillis::parse(field("units_max")?).map_err(|e| e.to_string())?;
    // The hold caps what the client pays: metered time beyond the quoted units is not billed.
    let units = GpuMillis::from_millis(output.device_ms.max(1).min(units_max.millis()));
    let unit_price = Rate::parse(field("unit_price")?).map_err(|e| e.to_string())?;
    let terms = JobTerms {
        job_id: JobId::parse(field("job_id")?).map_err(parse_err)?,
        gpu_id: ListingId::parse(field("gpu_id")?).map_err(parse_err)?,
        attempt: job["status"]["attempt"].as_u64().and_then(|a| u32::try_from(a).ok()).ok_or("job lacks status.attempt")?,
        provider: Address::parse(field("provider")?).map_err(parse_err)?,
        client: Address::parse(field("client")?).map_err(parse_err)?,
        unit_price,
        model: job["model"].as_str().map(ModelName::parse).transpose().map_err(parse_err)?,
    };
    // The receipt says what was metered: GPU time on CUDA, CPU time on the CPU.
    let metered = Metered {
        units,
        unit_type: UnitType::metered_by(&output.backend),
        tokens: output.text.as_ref().map(|t| (t.prompt_tokens, t.completion_tokens)),
    };
    let body = ReceiptBody::new(terms, metered, started_s, now_s().max(started_s)).map_err(|e| e.to_string())?;
    let receipt = body.sign(&s.key).map_err(|e| e.to_string())?;
    let completion = json!({ "worker_id": s.config.worker_id, "receipt": receipt, "output": output });
    let job_id = field("job_id")?;
    for attempt in 0..COMPLETE_ATTEMPTS_MAX {
        match s.client.complete_job(job_id, &completion).await {
            Ok(_) => {
                s.stats.lock().expect("stats").completed += 1;
                return Ok(());
            }
            Err(e) if e.is_transient() => tokio::time::sleep(backoff(attempt)).await,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!("completion of {job_id} not delivered after {COMPLETE_ATTEMPTS_MAX} attempts"))
}
