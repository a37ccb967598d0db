//! One module per function group.

pub mod accounts;
pub mod jobs;
pub mod pricing;
pub mod receipts;
pub mod registry;

use serde::{Deserialize, Serialize};

/// Items per page unless the caller asks.
pub const PAGE_ITEMS_DEFAULT: usize = 50;

/// `?limit=&cursor=` paging.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paging {
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

/// A page of items with the cursor to the next (absent on the last page).
#[derive(Debug, Serialize)]
pub struct PageOut<T> {
    pub items: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}
