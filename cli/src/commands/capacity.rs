//! `aitbc marketplace contract ...` and `aitbc marketplace reservation ...`: fixed-rate
//! contracts and capacity reservations between a provider and one client.

use crate::output::{cell, pairs, table};
use crate::{CliError, Ctx};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

#[derive(Args)]
#[command(after_help = "Examples:\n  aitbc marketplace contract offer --client enterprise-agent-123 --rate 0.08 --hours 100 --availability 0.95\n  aitbc marketplace contract accept --provider ait1...\n  aitbc marketplace contract show --provider ait1... --client ait1...\n  aitbc marketplace contract list")]
pub struct ContractArgs {
    #[command(subcommand)]
    command: ContractCommand,
}

#[derive(Subcommand)]
enum ContractCommand {
    /// Offer a client a fixed rate per GPU-hour for some GPU-hours (provider). Its jobs on your
    /// GPUs pay that rate until the hours are used; below the guaranteed availability (the
    /// share of its jobs started within your SLA response time) a job pays your SLA penalty.
    Offer {
        /// The client: its address or agent name.
        #[arg(long)]
        client: String,
        /// AITBC per GPU-hour.
        #[arg(long)]
        rate: String,
        /// GPU-hours covered (1..=8760).
        #[arg(long)]
        hours: u32,
        /// Guaranteed availability, 0..=1 (e.g. 0.95).
        #[arg(long, default_value = "0")]
        availability: String,
        /// Pay no SLA penalties on the contract's jobs.
        #[arg(long)]
        no_sla_penalties: bool,
        /// Hours the client has to accept (1..=720).
        #[arg(long, default_value_t = 168)]
        offer_valid_hours: u32,
    },
    /// Accept the contract a provider offered you (client).
    Accept {
        #[arg(long)]
        provider: String,
    },
    /// A contract: rate, hours left, measured availability.
    Show {
        #[arg(long)]
        provider: String,
        #[arg(long)]
        client: String,
    },
    /// Your contracts (as provider: one per client; as client: one per provider).
    List,
}

#[derive(Args)]
#[command(after_help = "Examples:\n  aitbc marketplace reservation offer --gpu-id gpu-0192... --client enterprise-agent-456 --memory 8 --duration 30d --fee 50\n  aitbc marketplace reservation accept --id resv-0192...\n  aitbc marketplace reservation show --id resv-0192...\n  aitbc marketplace reservation list")]
pub struct ReservationArgs {
    #[command(subcommand)]
    command: ReservationCommand,
}

#[derive(Subcommand)]
enum ReservationCommand {
    /// Offer a client a share of your GPU for a duration at a fee (provider). Once the client
    /// accepts and pays, your GPU's queue keeps that many places for it until the end.
    Offer {
        #[arg(long)]
        gpu_id: String,
        /// The client: its address or agent name.
        #[arg(long)]
        client: String,
        /// Slots of the GPU's concurrent jobs (or give --memory).
        #[arg(long, conflicts_with = "memory")]
        slots: Option<u32>,
        /// GPU memory in GiB, converted to whole slots.
        #[arg(long)]
        memory: Option<u32>,
        /// <N>h or <N>d, up to 90d.
        #[arg(long)]
        duration: String,
        /// AITBC the client pays on acceptance.
        #[arg(long)]
        fee: String,
        /// Hours the client has to accept (1..=720).
        #[arg(long, default_value_t = 168)]
        offer_valid_hours: u32,
    },
    /// Accept a reservation offered to you and pay its fee (client).
    Accept {
        #[arg(long)]
        id: String,
    },
    /// A reservation.
    Show {
        #[arg(long)]
        id: String,
    },
    /// Your reservations (offered by you, or to you).
    List,
}

/// "0.95" as basis points (9500), exactly; at most 4 decimals.
fn bps(text: &str) -> Result<u32, CliError> {
    let bad = || CliError::Usage(format!("--availability {text:?}: a share from 0 to 1 with at most 4 decimals, e.g. 0.95"));
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || frac.len() > 4 || !whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let value = whole.parse::<u32>().map_err(|_| bad())?.checked_mul(10_000).ok_or_else(bad)? + format!("{frac:0<4}").parse::<u32>().map_err(|_| bad())?;
    if value > 10_000 {
        return Err(bad());
    }
    Ok(value)
}

fn percent(bps: &Value) -> String {
    bps.as_u64().map_or_else(|| "-".into(), |b| format!("{}.{:02}%", b / 100, b % 100))
}

fn show_contract(c: &Value) {
    pairs(&[
        ("Provider", cell(&c["provider"])),
        ("Client", cell(&c["client"])),
        ("State", cell(&c["state"])),
        ("Rate", format!("{} AITBC/GPU-hour", cell(&c["fixed_rate"]))),
        ("GPU-hours", cell(&c["hours"])),
        ("GPU-seconds left", cell(&c["remaining"])),
        ("Guaranteed availability", percent(&c["guaranteed_availability_bps"])),
        ("Measured availability", format!("{} ({} of {} jobs)", percent(&c["availability_bps"]), cell(&c["jobs_available"]), cell(&c["jobs_completed"]))),
        ("SLA penalties", cell(&c["sla_penalties"])),
    ]);
}

fn show_reservation(r: &Value) {
    pairs(&[
        ("Reservation", cell(&r["reservation_id"])),
        ("GPU", cell(&r["gpu_id"])),
        ("Provider", cell(&r["provider"])),
        ("Client", cell(&r["client"])),
        ("State", cell(&r["state"])),
        ("Slots", cell(&r["slots"])),
        ("Duration", format!("{} hours", cell(&r["duration_hours"]))),
        ("Fee", format!("{} AITBC (platform {} AITBC)", cell(&r["fee"]), cell(&r["platform_fee"]))),
        ("Ends (unix ms)", cell(&r["ends_at_ms"])),
    ]);
}

pub async fn contract(args: ContractArgs, ctx: Ctx) -> Result<(), CliError> {
    let client = ctx.authed()?;
    let out: Value = match args.command {
        ContractCommand::Offer { client: to, rate, hours, availability, no_sla_penalties, offer_valid_hours } => {
            let body = json!({"client": to, "fixed_rate": rate, "hours": hours, "guaranteed_availability_bps": bps(&availability)?, "sla_penalties": !no_sla_penalties, "offer_valid_hours": offer_valid_hours});
            client.offer_contract(&body).await?
        }
        ContractCommand::Accept { provider } => client.accept_contract(&provider).await?,
        ContractCommand::Show { provider, client: who } => client.get(&format!("/v1/contracts/{provider}/{who}")).await?,
        ContractCommand::List => {
            let page: Value = client.get("/v1/contracts").await?;
            if ctx.json {
                crate::output::json(&page);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = page["items"].as_array().cloned().unwrap_or_default().iter().map(|c| {
                vec![cell(&c["provider"]), cell(&c["client"]), cell(&c["state"]), cell(&c["fixed_rate"]), cell(&c["remaining"]), percent(&c["availability_bps"])]
            }).collect();
            table(&["PROVIDER", "CLIENT", "STATE", "RATE/H", "GPU-S LEFT", "AVAILABILITY"], &rows);
            return Ok(());
        }
    };
    if ctx.json {
        crate::output::json(&out);
    } else {
        show_contract(&out);
    }
    Ok(())
}

pub async fn reservation(args: ReservationArgs, ctx: Ctx) -> Result<(), CliError> {
    let client = ctx.authed()?;
    let out: Value = match args.command {
        ReservationCommand::Offer { gpu_id, client: to, slots, memory, duration, fee, offer_valid_hours } => {
            let mut body = json!({"gpu_id": gpu_id, "client": to, "duration": duration, "fee": fee, "offer_valid_hours": offer_valid_hours});
            match (slots, memory) {
                (Some(s), None) => body["slots"] = json!(s),
                (None, Some(m)) => body["gpu_memory_gib"] = json!(m),
                _ => return Err(CliError::Usage("give the share as --slots or --memory".into())),
            }
            client.offer_reservation(&body).await?
        }
        ReservationCommand::Accept { id } => client.accept_reservation(&id).await?,
        ReservationCommand::Show { id } => client.get(&format!("/v1/reservations/{id}")).await?,
        ReservationCommand::List => {
            let page: Value = client.get("/v1/reservations").await?;
            if ctx.json {
                crate::output::json(&page);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = page["items"].as_array().cloned().unwrap_or_default().iter().map(|r| {
                vec![cell(&r["reservation_id"]), cell(&r["gpu_id"]), cell(&r["client"]), cell(&r["state"]), cell(&r["slots"]), cell(&r["fee"])]
            }).collect();
            table(&["RESERVATION", "GPU ID", "CLIENT", "STATE", "SLOTS", "FEE"], &rows);
            return Ok(());
        }
    };
    if ctx.json {
        crate::output::json(&out);
    } else {
        show_reservation(&out);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn availability_shares_parse_exactly() {
        assert_eq!(super::bps("0.95").unwrap(), 9_500);
        assert_eq!(super::bps("1").unwrap(), 10_000);
        assert_eq!(super::bps("0").unwrap(), 0);
        for bad in ["1.01", "-0.1", "0.12345", "", ".5", "x"] {
            assert!(super::bps(bad).is_err(), "{bad:?}");
        }
    }
}
