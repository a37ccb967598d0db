//! aitbc's domain core: the rules of the marketplace, with no I/O.
//!
//! - [`money`]: integer amounts, rates and units, exact decimals, every rounding rule.
//! - [`values`]: parse-don't-validate newtypes for ids, addresses, regions, models, GPUs.
//! - [`ledger`]: double-entry accounts and two-phase holds.
//! - [`pricing`]: deterministic quotes and the strategies of the guides.
//! - [`receipt`], [`signing`], [`jcs`]: signed usage receipts in RFC 8785 canonical form.
//! - [`job`]: the job lifecycle as a transition function; [`jobspec`]: what a job runs.
//! - [`capacity`]: reserved shares of listings, contracts' availability guarantees.
//! - [`reputation`]: measured facts of listings and providers, and the score made of them.
//! - [`health`]: workers' health reports and alert thresholds; [`insight`]: market percentiles,
//!   trends and the optimization-suggestion rules.
//! - [`config`]: the market's configuration, parsed from TOML text.
//!
//! Nothing here reads files, opens sockets or spawns tasks; the only environment it touches is
//! the clock and the OS random source, for generated ids and keys.

pub mod availability;
pub mod capacity;
pub mod config;
pub mod health;
pub mod insight;
pub mod jcs;
pub mod jobspec;
pub mod job;
pub mod ledger;
pub mod money;
pub mod pricing;
pub mod receipt;
pub mod reputation;
pub mod routing;
#[cfg(feature = "openapi")]
mod schema;
pub mod signing;
pub mod values;

pub use money::{Amount, GpuMillis, Rate};
