//! `aitbc marketplace {monitor,alerts,analytics,suggestions,intelligence,sharing,signal}`: the
//! provider guide's health monitoring, analytics, optimization suggestions and market
//! intelligence (flattened into `aitbc marketplace`).

use crate::output::{cell, pairs, table};
use crate::{CliError, Ctx};
use clap::{Subcommand, ValueEnum};
use serde_json::{json, Value};

#[derive(Clone, Copy, ValueEnum)]
pub enum ContributionArg {
    /// Read the market view; post no signals.
    Passive,
    /// Also post observations and pricing proposals (`aitbc marketplace signal`).
    Active,
}

#[derive(Subcommand)]
pub enum InsightCommand {
    /// Set a GPU's health monitoring: how often its worker reports GPU status, memory and job
    /// results, and the thresholds whose crossing is recorded as an alert.
    #[command(after_help = "Example:\n  aitbc marketplace monitor --gpu-id gpu-0192... --report-interval 30 --gpu-failure --max-temperature 85 --max-memory 85 --max-failure-rate 10 --max-queue 50\n\nPercentages are of memory in use, GPU utilization and failed jobs (of at least 5 in one report).\nOne alert per metric per 5 minutes; alerts are kept 7 days (aitbc marketplace alerts).")]
    Monitor {
        #[arg(long)]
        gpu_id: String,
        /// Seconds between health reports (10..=3600).
        #[arg(long, default_value_t = 60)]
        report_interval: u32,
        /// Alert when the worker reports its GPU failed.
        #[arg(long)]
        gpu_failure: bool,
        /// Alert above this GPU temperature, degrees Celsius.
        #[arg(long)]
        max_temperature: Option<u32>,
        /// Alert above this GPU utilization, percent.
        #[arg(long)]
        max_utilization: Option<u32>,
        /// Alert above this share of memory in use, percent.
        #[arg(long)]
        max_memory: Option<u32>,
        /// Alert above this share of failed jobs, percent.
        #[arg(long)]
        max_failure_rate: Option<u32>,
        /// Alert above this many jobs waiting in the GPU's queue.
        #[arg(long)]
        max_queue: Option<u32>,
    },
    /// A GPU's latest health report and its alerts, newest first.
    #[command(after_help = "Example:\n  aitbc marketplace alerts --gpu-id gpu-0192...")]
    Alerts {
        #[arg(long)]
        gpu_id: String,
        /// Alerts to show (1..=100).
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// A GPU's analytics over a period: utilization, peak demand hours, most profitable models,
    /// and earnings by client, model and hour of day.
    #[command(after_help = "Example:\n  aitbc marketplace analytics --gpu-id gpu-0192... --period 30d")]
    Analytics {
        #[arg(long)]
        gpu_id: String,
        /// <N>h or <N>d.
        #[arg(long, default_value = "30d")]
        period: String,
    },
    /// Optimization suggestions for a GPU from its measured data of the last 7 days: price
    /// against the region's median, utilization, schedule gaps, failure rate.
    #[command(after_help = "Example:\n  aitbc marketplace suggestions --gpu-id gpu-0192...\n\nThe rules are in ARCHITECTURE.md (Provider insight).")]
    Suggestions {
        #[arg(long)]
        gpu_id: String,
    },
    /// Market intelligence per region and model: demand, utilization, unit-price percentiles and
    /// trends from receipts; shared provider metrics; providers' signals (never applied).
    #[command(after_help = "Examples:\n  aitbc marketplace intelligence\n  aitbc marketplace intelligence --region us-west --hours 168")]
    Intelligence {
        #[arg(long)]
        region: Option<String>,
        /// The window: the last 1..=168 hours.
        #[arg(long, default_value_t = 24)]
        hours: u32,
    },
    /// Join or leave the market-intelligence group: share your GPUs' measured metrics in the
    /// market view, and (active) post signals.
    #[command(after_help = "Examples:\n  aitbc marketplace sharing --metrics --contribution active\n  aitbc marketplace sharing --contribution passive   # leave: no metrics, no signals")]
    Sharing {
        /// Share your GPUs' measured metrics.
        #[arg(long)]
        metrics: bool,
        #[arg(long, value_enum, default_value = "passive")]
        contribution: ContributionArg,
    },
    /// Post a market signal for a region where you list a GPU: a pricing proposal (recorded and
    /// shown aggregated, never applied to prices).
    #[command(after_help = "Example:\n  aitbc marketplace signal --region us-west --proposed-rate 0.12 --rationale \"Increased demand for LLM inference\" --expected-impact \"revenue_increase_15%\"")]
    Signal {
        #[arg(long)]
        region: String,
        /// AITBC per GPU-hour.
        #[arg(long)]
        proposed_rate: String,
        #[arg(long, default_value = "")]
        rationale: String,
        #[arg(long, default_value = "")]
        expected_impact: String,
    },
}

fn percent(bps: &Value) -> String {
    bps.as_u64().map_or_else(|| "-".into(), |b| format!("{}.{:02}%", b / 100, b % 100))
}

fn percent_bps(name: &str, value: Option<u32>) -> Result<Option<u32>, CliError> {
    match value {
        Some(p) if !(1..=100).contains(&p) => Err(CliError::Usage(format!("--{name} is a percentage, 1..=100"))),
        other => Ok(other.map(|p| p * 100)),
    }
}

pub async fn run(command: InsightCommand, ctx: Ctx) -> Result<(), CliError> {
    match command {
        InsightCommand::Monitor { gpu_id, report_interval, gpu_failure, max_temperature, max_utilization, max_memory, max_failure_rate, max_queue } => {
            let mut alerts = serde_json::Map::new();
            alerts.insert("gpu_failure".into(), json!(gpu_failure));
            for (name, value) in [
                ("gpu_temperature_c_max", max_temperature),
                ("gpu_utilization_bps_max", percent_bps("max-utilization", max_utilization)?),
                ("memory_used_bps_max", percent_bps("max-memory", max_memory)?),
                ("failure_rate_bps_max", percent_bps("max-failure-rate", max_failure_rate)?),
                ("queue_length_max", max_queue),
            ] {
                if let Some(v) = value {
                    alerts.insert(name.into(), json!(v));
                }
            }
            let m = ctx.authed()?.set_monitoring(&gpu_id, &json!({ "report_interval_s": report_interval, "alerts": alerts })).await?;
            if ctx.json {
                crate::output::json(&m);
            } else {
                println!("Monitoring of GPU {gpu_id}: reports every {} s; alerts {}", cell(&m["report_interval_s"]), m["alerts"]);
            }
            Ok(())
        }
        InsightCommand::Alerts { gpu_id, limit } => {
            let a = ctx.authed()?.listing_alerts(&gpu_id, limit).await?;
            if ctx.json {
                crate::output::json(&a);
                return Ok(());
            }
            let h = &a["health"];
            pairs(&[
                ("GPU", cell(&a["gpu_id"])),
                ("Online", cell(&a["online"])),
                ("Monitoring", if a["monitoring"].is_object() { format!("reports every {} s", cell(&a["monitoring"]["report_interval_s"])) } else { "not configured (aitbc marketplace monitor)".into() }),
                ("Last report", if h.is_object() { format!("at {} ms by {}: {}", cell(&h["at_ms"]), cell(&h["worker_id"]), h["report"]) } else { "-".into() }),
            ]);
            let rows: Vec<Vec<String>> = a["items"].as_array().cloned().unwrap_or_default().iter().map(|i| vec![cell(&i["at_ms"]), cell(&i["metric"]), cell(&i["value"]), cell(&i["threshold"]), cell(&i["worker_id"])]).collect();
            if rows.is_empty() {
                println!("No alerts.");
            } else {
                table(&["AT (ms)", "METRIC", "VALUE", "THRESHOLD", "WORKER"], &rows);
            }
            Ok(())
        }
        InsightCommand::Analytics { gpu_id, period } => {
            let a = ctx.authed()?.listing_analytics(&gpu_id, &period).await?;
            if ctx.json {
                crate::output::json(&a);
                return Ok(());
            }
            let peak: Vec<String> = a["peak_hours"].as_array().cloned().unwrap_or_default().iter().map(|h| format!("{h}:00")).collect();
            pairs(&[
                ("GPU", cell(&a["gpu_id"])),
                ("Period", cell(&a["period"])),
                ("Jobs", cell(&a["jobs"])),
                ("Utilization", format!("{} ({} GPU-seconds)", percent(&a["utilization_bps"]), cell(&a["gpu_seconds"]))),
                ("Peak demand hours (local)", if peak.is_empty() { "-".into() } else { peak.join(", ") }),
                ("Net earnings", format!("{} AITBC", cell(&a["earnings"]["net"]))),
                ("Top client", cell(&a["earnings"]["top_client"])),
            ]);
            let rows: Vec<Vec<String>> = a["profitable_models"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|m| vec![cell(&m["model"]), cell(&m["jobs"]), cell(&m["gross"]), cell(&m["gross_per_gpu_hour"])])
                .collect();
            if !rows.is_empty() {
                table(&["MODEL", "JOBS", "GROSS", "GROSS/GPU-HOUR"], &rows);
            }
            Ok(())
        }
        InsightCommand::Suggestions { gpu_id } => {
            let s = ctx.authed()?.listing_suggestions(&gpu_id).await?;
            if ctx.json {
                crate::output::json(&s);
                return Ok(());
            }
            let items = s["items"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                println!("No suggestions: nothing in GPU {gpu_id}'s measured data of the last 7 days calls for a change.");
            }
            for item in items {
                println!("Suggestion ({}): {}", cell(&item["code"]), cell(&item["description"]));
                println!("  Expected impact: {}", cell(&item["impact"]));
                for step in item["implementation_steps"].as_array().cloned().unwrap_or_default() {
                    println!("  - {}", cell(&step));
                }
            }
            Ok(())
        }
        InsightCommand::Intelligence { region, hours } => {
            let v = ctx.client().market_intelligence(region.as_deref(), hours).await?;
            if ctx.json {
                crate::output::json(&v);
                return Ok(());
            }
            let mut rows = Vec::new();
            for r in v["regions"].as_array().cloned().unwrap_or_default() {
                for m in r["models"].as_array().cloned().unwrap_or_default() {
                    rows.push(vec![
                        cell(&r["region"]),
                        cell(&m["model"]),
                        cell(&m["jobs"]),
                        percent(&r["utilization_bps"]),
                        format!("{} / {} / {}", cell(&m["unit_price_p10"]), cell(&m["unit_price_p50"]), cell(&m["unit_price_p90"])),
                        cell(&m["price_trend"]),
                        cell(&m["demand_trend"]),
                    ]);
                }
                let sig = &r["signals"];
                println!(
                    "{}: {} GPUs, demand now {}, {} jobs in {hours} h; shared metrics from {} providers; {} pricing proposals (median {} AITBC/GPU-hour)",
                    cell(&r["region"]),
                    cell(&r["gpus"]),
                    percent(&r["demand_bps"]),
                    cell(&r["jobs"]),
                    cell(&r["shared_performance"]["providers"]),
                    cell(&sig["proposals"]),
                    cell(&sig["proposed_rate_median"])
                );
            }
            if !rows.is_empty() {
                table(&["REGION", "MODEL", "JOBS", "UTILIZATION", "PRICE/S P10 / P50 / P90", "PRICE TREND", "DEMAND TREND"], &rows);
            }
            Ok(())
        }
        InsightCommand::Sharing { metrics, contribution } => {
            let address = ctx.address()?;
            let level = match contribution {
                ContributionArg::Passive => "passive",
                ContributionArg::Active => "active",
            };
            let s = ctx.authed()?.set_sharing(&address, &json!({ "performance_metrics": metrics, "contribution_level": level })).await?;
            if ctx.json {
                crate::output::json(&s);
            } else {
                println!("Sharing: performance metrics {}, contribution {}", cell(&s["performance_metrics"]), cell(&s["contribution_level"]));
            }
            Ok(())
        }
        InsightCommand::Signal { region, proposed_rate, rationale, expected_impact } => {
            let body = json!({ "region": region, "proposal": { "proposed_base_rate": proposed_rate, "rationale": rationale, "expected_impact": expected_impact } });
            let s = ctx.authed()?.post_market_signal(&body).await?;
            if ctx.json {
                crate::output::json(&s);
            } else {
                println!("Recorded your proposal of {} AITBC/GPU-hour for {} (shown aggregated; never applied to prices)", cell(&s["proposal"]["proposed_base_rate"]), cell(&s["region"]));
            }
            Ok(())
        }
    }
}
