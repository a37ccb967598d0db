//! Progress of long runs: bars (indicatif) on a terminal, JSON log lines with counts and rates
//! elsewhere (Lambda, CloudWatch, a pipe).

use aitbc_market::settlement::Progress;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A JSON progress line at most this often per task (plus one when the task finishes).
pub const LOG_INTERVAL_MS: u64 = 5_000;
/// How often a bar redraws, at most.
pub const BAR_REFRESH_HZ: u8 = 4;

/// Installs the log subscriber: JSON lines, or human-readable ones; level from `AITBC_LOG`
/// (default info). Logs go to stderr so that stdout carries only reports.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AITBC_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(std::io::stderr);
    let _ = if json { builder.json().with_current_span(false).try_init() } else { builder.try_init() };
}

/// Whether a person watches: stderr is a terminal and we are not under Lambda.
pub fn interactive() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_none()
}

/// Bars on a terminal, log lines otherwise.
pub fn for_environment() -> Box<dyn Reporter> {
    if interactive() {
        Box::new(Bars::default())
    } else {
        Box::new(LogLines::default())
    }
}

/// A progress sink that can also say it is done.
pub trait Reporter: Progress {
    /// Ends the current run's bars or logs the final counts and rates.
    fn finish(&self);
    /// As a plain `Progress`.
    fn as_progress(&self) -> &dyn Progress;
}

struct Count {
    done: u64,
    started: Instant,
    logged: Instant,
}

/// Counts and rates as JSON log lines (through `tracing`).
#[derive(Default)]
pub struct LogLines {
    counts: Mutex<HashMap<&'static str, Count>>,
}

fn rate(done: u64, since: Instant) -> f64 {
    let s = since.elapsed().as_secs_f64();
    if s > 0.0 {
        done as f64 / s
    } else {
        0.0
    }
}

impl Progress for LogLines {
    fn advance(&self, task: &'static str, items: u64) {
        let now = Instant::now();
        let mut counts = self.counts.lock().expect("not poisoned");
        let count = counts.entry(task).or_insert(Count { done: 0, started: now, logged: now });
        count.done += items;
        if now.duration_since(count.logged) >= Duration::from_millis(LOG_INTERVAL_MS) {
            count.logged = now;
            tracing::info!(task, done = count.done, rate_per_s = rate(count.done, count.started).round(), "progress");
        }
    }
}

impl Reporter for LogLines {
    fn finish(&self) {
        let mut counts = self.counts.lock().expect("not poisoned");
        for (task, count) in counts.drain() {
            tracing::info!(task, done = count.done, rate_per_s = rate(count.done, count.started).round(), elapsed_ms = count.started.elapsed().as_millis() as u64, "progress done");
        }
    }
    fn as_progress(&self) -> &dyn Progress {
        self
    }
}

/// One spinner per task with its count and rate (totals are unknown up front: the work is
/// whatever the store holds).
#[derive(Default)]
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<&'static str, ProgressBar>>,
}

impl Progress for Bars {
    fn advance(&self, task: &'static str, items: u64) {
        let mut bars = self.bars.lock().expect("not poisoned");
        let bar = bars.entry(task).or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(ProgressStyle::with_template("{spinner} {prefix:>7} {human_pos} items  {per_sec}  {elapsed}").expect("a valid template"));
            bar.set_prefix(task);
            bar.enable_steady_tick(Duration::from_millis(1_000 / u64::from(BAR_REFRESH_HZ)));
            bar
        });
        bar.inc(items);
    }
}

impl Reporter for Bars {
    fn finish(&self) {
        for (_, bar) in self.bars.lock().expect("not poisoned").drain() {
            bar.finish();
        }
    }
    fn as_progress(&self) -> &dyn Progress {
        self
    }
}
