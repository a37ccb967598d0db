//! `aitbc marketplace ...`: the GPU Monetization Guide's commands.

use crate::output::{cell, pairs, table};
use crate::{CliError, Ctx};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

#[derive(Args)]
pub struct MarketplaceArgs {
    #[command(subcommand)]
    command: MarketplaceCommand,
}

#[derive(Subcommand)]
enum MarketplaceCommand {
    /// Register, list and update GPU listings.
    Gpu(GpuArgs),
    /// Fixed-rate contracts: offer a client a rate for GPU-hours (provider), accept (client),
    /// show, list.
    Contract(super::capacity::ContractArgs),
    /// Capacity reservations: offer a client a share of a GPU for a fee (provider), accept and
    /// pay (client), show, list.
    Reservation(super::capacity::ReservationArgs),
    /// A GPU's earnings over a period, by client, model and hour of day.
    #[command(after_help = "Example:\n  aitbc marketplace earnings --gpu-id gpu-0192... --period 30d")]
    Earnings {
        #[arg(long)]
        gpu_id: String,
        /// <N>h or <N>d.
        #[arg(long, default_value = "30d")]
        period: String,
    },
    /// A GPU's status: online, utilization, bookings, realized rate.
    #[command(after_help = "Example:\n  aitbc marketplace status --gpu-id gpu-0192...")]
    Status {
        #[arg(long)]
        gpu_id: String,
    },
    /// A provider's reputation: success and completion rates, submission-to-start times, SLA
    /// breaches, client ratings and the overall score (formula in ARCHITECTURE.md), overall and
    /// per GPU.
    #[command(after_help = "Examples:\n  aitbc marketplace reputation                      # your own\n  aitbc marketplace reputation --provider ait1...")]
    Reputation {
        /// The provider's address [default: yours].
        #[arg(long)]
        provider: Option<String>,
    },
    #[command(flatten)]
    Insight(super::insight::InsightCommand),
}

/// A fraction in basis points as a percentage, or "-" when nothing was measured.
fn percent(bps: &Value) -> String {
    bps.as_u64().map_or_else(|| "-".into(), |b| format!("{}.{:02}%", b / 100, b % 100))
}

fn reputation_pairs(r: &Value) -> Vec<(&'static str, String)> {
    let ms = |v: &Value| v.as_u64().map_or_else(|| "-".into(), |m| format!("{m} ms"));
    vec![
        ("Score", percent(&r["score_bps"])),
        ("Job success rate", percent(&r["success_rate_bps"])),
        ("Completion rate", percent(&r["completion_rate_bps"])),
        ("Submission to start", format!("mean {}, p95 at most {}", ms(&r["mean_start_ms"]), ms(&r["p95_start_ms"]))),
        ("SLA breaches", format!("{} ({})", cell(&r["facts"]["sla_breaches"]), percent(&r["sla_breach_rate_bps"]))),
        ("Client rating", match r["mean_rating_centi"].as_u64() {
            Some(c) => format!("{}.{:02} of 5 ({} ratings)", c / 100, c % 100, cell(&r["facts"]["ratings"])),
            None => "no ratings yet".into(),
        }),
        ("Jobs", format!("{} completed, {} failed, {} expired", cell(&r["facts"]["completed"]), cell(&r["facts"]["failed"]), cell(&r["facts"]["expired"]))),
    ]
}

#[derive(Args)]
#[command(after_help = "Examples:\n  aitbc marketplace gpu register --name \"My-GPU\" --memory 24 --cuda-version 12.1 --base-price 0.05 --region us-west\n  aitbc marketplace gpu list --region us-west\n  aitbc marketplace gpu update --gpu-id gpu-0192... --strategy utilization-guard\n  aitbc marketplace gpu update --gpu-id gpu-0192... --batch-min-size 10 --batch-discount 30")]
pub struct GpuArgs {
    #[command(subcommand)]
    command: GpuCommand,
}

#[derive(Clone, Copy, ValueEnum)]
enum StrategyArg {
    MarketBalance,
    PeakMaximizer,
    UtilizationGuard,
    Dynamic,
}

impl StrategyArg {
    fn name(self) -> &'static str {
        match self {
            StrategyArg::MarketBalance => "market-balance",
            StrategyArg::PeakMaximizer => "peak-maximizer",
            StrategyArg::UtilizationGuard => "utilization-guard",
            StrategyArg::Dynamic => "dynamic",
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum PriorityArg {
    Fifo,
    WeightedFairShare,
}

#[derive(Clone, Copy, ValueEnum)]
enum PreemptionArg {
    None,
    Graceful,
}

#[derive(Subcommand)]
enum GpuCommand {
    /// List a GPU on the marketplace.
    #[command(after_help = "Example:\n  aitbc marketplace gpu register --name \"My-GPU\" --memory 24 --cuda-version 12.1 --base-price 0.05 --region us-west")]
    Register {
        /// A display name, e.g. My-GPU.
        #[arg(long)]
        name: String,
        /// GPU memory in GiB.
        #[arg(long)]
        memory: String,
        /// CUDA version, MAJOR.MINOR.
        #[arg(long)]
        cuda_version: String,
        /// AITBC per GPU-hour, e.g. 0.05.
        #[arg(long, allow_hyphen_values = true)]
        base_price: String,
        /// The market region [default: us-west, or AITBC_REGION].
        #[arg(long)]
        region: Option<String>,
        /// How many such GPUs.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Models served (comma-separated), from the rate card [default: every model on it].
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Job kinds served (comma-separated): vector_add, reduction, gemm, kernel.
        #[arg(long, value_delimiter = ',')]
        kinds: Vec<String>,
        #[arg(long, value_enum, default_value = "market-balance")]
        strategy: StrategyArg,
    },
    /// List GPUs in a region (or in every region).
    #[command(after_help = "Example:\n  aitbc marketplace gpu list --region us-west")]
    List {
        #[arg(long)]
        region: Option<String>,
        /// Only GPUs online and taking jobs now.
        #[arg(long)]
        available: bool,
    },
    /// Configure a GPU's job queue (the guide's configure_queue): its size, claim order,
    /// retries and preemption. Flags not given keep their current values.
    #[command(after_help = "Example:\n  aitbc marketplace gpu queue --gpu-id gpu-0192... --max-queue-size 20 --priority weighted-fair-share --preemption graceful --attempts 3\n\nweighted-fair-share claims higher tiers first, then shares claims fairly across clients by the\nGPU time they ask (ARCHITECTURE.md, Queues); graceful preemption needs it.")]
    Queue {
        #[arg(long)]
        gpu_id: String,
        /// Jobs waiting at most (1..=100000); further submissions are refused, nothing held.
        #[arg(long)]
        max_queue_size: Option<u32>,
        #[arg(long, value_enum)]
        priority: Option<PriorityArg>,
        #[arg(long, value_enum)]
        preemption: Option<PreemptionArg>,
        /// Claims per job: a timed-out or retryably failed job is queued again until it has
        /// used this many (1..=100).
        #[arg(long)]
        attempts: Option<u32>,
    },
    /// Change a GPU's pricing strategy, base price, status, batch discount or model prices.
    #[command(
        after_help = "Examples:\n  aitbc marketplace gpu update --gpu-id gpu-0192... --strategy peak-maximizer\n  aitbc marketplace gpu update --gpu-id gpu-0192... --model-price custom-medical-llm=0.2\n  aitbc marketplace gpu update --gpu-id gpu-0192... --remove-model-price custom-medical-llm\n\nA job for a model the GPU prices pays that price (AITBC per GPU-hour) instead of the base price,\nat least the rate card's rate when the model is on the card. A model off the rate card is served\nonce the GPU's worker has it loaded (aitbc models, [[models]] in worker.toml). At most 16 models."
    )]
    Update {
        #[arg(long)]
        gpu_id: String,
        #[arg(long, value_enum)]
        strategy: Option<StrategyArg>,
        #[arg(long, allow_hyphen_values = true)]
        base_price: Option<String>,
        /// active or paused.
        #[arg(long)]
        status: Option<String>,
        /// Batch processing: batches of at least this many jobs (2..=100) get --batch-discount.
        #[arg(long, requires = "batch_discount")]
        batch_min_size: Option<u32>,
        /// Batch processing: percent off each job of a large enough batch (0..=100).
        #[arg(long, requires = "batch_min_size")]
        batch_discount: Option<u32>,
        /// The GPU's own price of a model, NAME=PRICE in AITBC per GPU-hour (like --base-price),
        /// e.g. custom-medical-llm=0.2; repeat for more models. Other models keep their prices.
        #[arg(long = "model-price", value_name = "NAME=PRICE", allow_hyphen_values = true)]
        model_prices: Vec<String>,
        /// Stop pricing a model (its jobs pay the base price or the rate card again); repeatable.
        #[arg(long = "remove-model-price", value_name = "NAME")]
        remove_model_prices: Vec<String>,
    },
}

pub async fn run(args: MarketplaceArgs, ctx: Ctx) -> Result<(), CliError> {
    match args.command {
        MarketplaceCommand::Gpu(gpu) => gpu_run(gpu, ctx).await,
        MarketplaceCommand::Contract(a) => super::capacity::contract(a, ctx).await,
        MarketplaceCommand::Reservation(a) => super::capacity::reservation(a, ctx).await,
        MarketplaceCommand::Insight(command) => super::insight::run(command, ctx).await,
        MarketplaceCommand::Earnings { gpu_id, period } => {
            let e: Value = ctx.authed()?.get(&format!("/v1/listings/{gpu_id}/earnings?period={period}")).await?;
            if ctx.json {
                crate::output::json(&e);
                return Ok(());
            }
            pairs(&[
                ("GPU", cell(&e["gpu_id"])),
                ("Period", cell(&e["period"])),
                ("Jobs", cell(&e["jobs"])),
                ("Gross", format!("{} AITBC", cell(&e["gross"]))),
                ("Platform fee", format!("{} AITBC", cell(&e["fees"]))),
                ("Net earnings", format!("{} AITBC", cell(&e["net"]))),
                ("Daily average", format!("{} AITBC", cell(&e["daily_average"]))),
                ("Top client", cell(&e["top_client"])),
            ]);
            for (title, key) in [("By client", "by_client"), ("By model", "by_model"), ("By hour of day (local)", "by_hour_of_day")] {
                if let Some(map) = e[key].as_object().filter(|m| !m.is_empty()) {
                    println!("{title}:");
                    let rows: Vec<Vec<String>> = map.iter().map(|(k, v)| vec![format!("  {k}"), format!("{} AITBC", cell(v))]).collect();
                    for row in rows {
                        println!("{}  {}", row[0], row[1]);
                    }
                }
            }
            Ok(())
        }
        MarketplaceCommand::Reputation { provider } => {
            let provider = match provider {
                Some(p) => p,
                None => ctx.address()?,
            };
            let r: Value = ctx.client().get(&format!("/v1/providers/{provider}/reputation")).await?;
            if ctx.json {
                crate::output::json(&r);
                return Ok(());
            }
            let mut rows = vec![("Provider", cell(&r["provider"]))];
            rows.extend(reputation_pairs(&r["reputation"]));
            pairs(&rows);
            let listings: Vec<Vec<String>> = r["listings"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|l| {
                    let rep = &l["reputation"];
                    vec![cell(&l["gpu_id"]), percent(&rep["score_bps"]), percent(&rep["success_rate_bps"]), cell(&rep["facts"]["completed"]), cell(&rep["facts"]["ratings"])]
                })
                .collect();
            if !listings.is_empty() {
                table(&["GPU ID", "SCORE", "SUCCESS", "COMPLETED", "RATINGS"], &listings);
            }
            Ok(())
        }
        MarketplaceCommand::Status { gpu_id } => {
            let s: Value = ctx.client().get(&format!("/v1/listings/{gpu_id}/status")).await?;
            if ctx.json {
                crate::output::json(&s);
                return Ok(());
            }
            pairs(&[
                ("GPU", format!("{} ({})", cell(&s["gpu_id"]), cell(&s["name"]))),
                ("Region", cell(&s["region"])),
                ("Status", cell(&s["status"])),
                ("Online", cell(&s["online"])),
                ("Strategy", cell(&s["strategy"])),
                ("Base price", format!("{} AITBC/GPU-hour", cell(&s["base_price"]))),
                ("Utilization", format!("{} ({} of {} slots busy)", cell(&s["utilization"]), cell(&s["active_jobs"]), cell(&s["capacity"]))),
                ("Bookings waiting", cell(&s["queued_jobs"])),
                ("Completed jobs", cell(&s["completed_jobs"])),
                ("GPU-seconds sold", cell(&s["gpu_seconds_total"])),
                ("Earned (gross)", format!("{} AITBC", cell(&s["earned"]))),
                ("Realized rate", format!("{} AITBC/GPU-hour", cell(&s["realized_rate_per_hour"]))),
            ]);
            Ok(())
        }
    }
}

fn listing_rows(items: &[Value]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|l| {
            vec![
                cell(&l["gpu_id"]),
                cell(&l["name"]),
                format!("{} GiB", cell(&l["memory_gib"])),
                cell(&l["cuda_version"]),
                cell(&l["region"]),
                cell(&l["base_price"]),
                cell(&l["strategy"]),
                cell(&l["status"]),
                if l["online"] == true { "yes".into() } else { "no".into() },
            ]
        })
        .collect()
}

async fn gpu_run(args: GpuArgs, ctx: Ctx) -> Result<(), CliError> {
    match args.command {
        GpuCommand::Register { name, memory, cuda_version, base_price, region, count, models, kinds, strategy } => {
            let memory: u64 = memory.parse().map_err(|_| CliError::Usage(format!("--memory {memory:?} is not a whole number of GiB")))?;
            let region = region.unwrap_or(crate::local::LocalSettings::load()?.region);
            let models = if models.is_empty() {
                let card: Value = ctx.client().get("/v1/rate-card").await?;
                card["models"].as_array().map(|m| m.iter().filter_map(|e| e["model"].as_str().map(String::from)).collect()).unwrap_or_default()
            } else {
                models
            };
            let mut body = json!({
                "name": name, "memory_gib": memory, "cuda_version": cuda_version, "base_price": base_price,
                "region": region, "count": count, "models": models, "strategy": strategy.name(),
            });
            if !kinds.is_empty() {
                body["kinds"] = json!(kinds);
            }
            let l = ctx.authed()?.create_listing(&body).await?;
            if ctx.json {
                crate::output::json(&l);
            } else {
                println!(
                    "Registered GPU {} ({}, {} GiB, CUDA {}) in {} at {} AITBC/GPU-hour, strategy {}",
                    cell(&l["gpu_id"]), cell(&l["name"]), cell(&l["memory_gib"]), cell(&l["cuda_version"]), cell(&l["region"]), cell(&l["base_price"]), cell(&l["strategy"])
                );
            }
            Ok(())
        }
        GpuCommand::List { region, available } => {
            let client = ctx.client();
            let regions: Vec<String> = match region {
                Some(r) => vec![r],
                None => {
                    let market: Value = client.get("/v1/market").await?;
                    market.as_array().map(|a| a.iter().filter(|r| r["listings"].as_u64() > Some(0)).filter_map(|r| r["region"].as_str().map(String::from)).collect()).unwrap_or_default()
                }
            };
            let mut items = Vec::new();
            for region in regions {
                let page: Value = client.get(&format!("/v1/listings?region={region}&available={available}&limit=100")).await?;
                items.extend(page["items"].as_array().cloned().unwrap_or_default());
            }
            if ctx.json {
                crate::output::json(&Value::Array(items));
            } else if items.is_empty() {
                println!("No GPUs listed.");
            } else {
                table(&["GPU ID", "NAME", "MEMORY", "CUDA", "REGION", "PRICE/H", "STRATEGY", "STATUS", "ONLINE"], &listing_rows(&items));
            }
            Ok(())
        }
        GpuCommand::Queue { gpu_id, max_queue_size, priority, preemption, attempts } => {
            let client = ctx.authed()?;
            let current: Value = client.listing(&gpu_id).await?;
            let mut config = current["queue_config"].as_object().cloned().unwrap_or_default();
            if let Some(n) = max_queue_size {
                config.insert("max_queue_size".into(), json!(n));
            }
            if let Some(p) = priority {
                config.insert("priority".into(), json!(match p { PriorityArg::Fifo => "fifo", PriorityArg::WeightedFairShare => "weighted_fair_share" }));
            }
            if let Some(p) = preemption {
                config.insert("preemption".into(), json!(match p { PreemptionArg::None => "none", PreemptionArg::Graceful => "graceful" }));
            }
            if let Some(a) = attempts {
                config.insert("attempts_max".into(), json!(a));
            }
            let l: Value = client.patch(&format!("/v1/listings/{gpu_id}"), &json!({ "queue_config": config })).await?;
            if ctx.json {
                crate::output::json(&l);
            } else {
                let q = &l["queue_config"];
                let attempts = q["attempts_max"].as_u64().map_or_else(|| "the marketplace's default".to_string(), |a| a.to_string());
                println!(
                    "Queue of GPU {}: at most {} jobs waiting, {} order, preemption {}, attempts {attempts}",
                    cell(&l["gpu_id"]),
                    cell(&q["max_queue_size"]),
                    cell(&q["priority"]),
                    cell(&q["preemption"])
                );
            }
            Ok(())
        }
        GpuCommand::Update { gpu_id, strategy, base_price, status, batch_min_size, batch_discount, model_prices, remove_model_prices } => {
            let mut patch = serde_json::Map::new();
            if let Some(s) = strategy {
                patch.insert("strategy".into(), json!(s.name()));
            }
            if let Some(p) = base_price {
                patch.insert("base_price".into(), json!(p));
            }
            if let Some(s) = status {
                patch.insert("status".into(), json!(s));
            }
            if let (Some(size), Some(percent)) = (batch_min_size, batch_discount) {
                patch.insert("batch".into(), json!({ "min_batch_size": size, "discount_percent": percent }));
            }
            if !model_prices.is_empty() || !remove_model_prices.is_empty() {
                let mut prices = serde_json::Map::new();
                for entry in &model_prices {
                    let (name, price) = entry
                        .split_once('=')
                        .filter(|(n, p)| !n.is_empty() && !p.is_empty())
                        .ok_or_else(|| CliError::Usage(format!("--model-price {entry:?}: write NAME=PRICE, e.g. custom-medical-llm=0.2")))?;
                    prices.insert(name.to_string(), json!(price));
                }
                for name in remove_model_prices {
                    if prices.insert(name.clone(), Value::Null).is_some() {
                        return Err(CliError::Usage(format!("{name} is both priced and removed")));
                    }
                }
                patch.insert("model_prices".into(), Value::Object(prices));
            }
            if patch.is_empty() {
                return Err(CliError::Usage(
                    "nothing to update: give --strategy, --base-price, --status, --model-price, --remove-model-price or --batch-min-size with --batch-discount".into(),
                ));
            }
            let l: Value = ctx.authed()?.patch(&format!("/v1/listings/{gpu_id}"), &Value::Object(patch)).await?;
            if ctx.json {
                crate::output::json(&l);
            } else {
                println!("Updated GPU {}: strategy {}, base price {} AITBC/GPU-hour, status {}", cell(&l["gpu_id"]), cell(&l["strategy"]), cell(&l["base_price"]), cell(&l["status"]));
                if l["batch"].is_object() {
                    println!("Batches of {} jobs or more: {}% off", cell(&l["batch"]["min_batch_size"]), cell(&l["batch"]["discount_percent"]));
                }
                match l["model_prices"].as_object().filter(|p| !p.is_empty()) {
                    Some(prices) => {
                        for (model, price) in prices {
                            println!("Model price {model}: {} AITBC/GPU-hour", cell(price));
                        }
                    }
                    None => println!("Model prices: none (models pay the base price or the rate card)"),
                }
            }
            Ok(())
        }
    }
}
