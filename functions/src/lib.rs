//! The HTTP API: one axum router per function group (registry, pricing, jobs, receipts,
//! accounts). Filled by the HTTP API issue; today it only names its groups.

/// The function groups, each deployed as its own Lambda and merged for local serving.
pub const FUNCTION_GROUPS: [&str; 5] = ["registry", "pricing", "jobs", "receipts", "accounts"];
