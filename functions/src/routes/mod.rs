//! One module per function group.

pub mod accounts;
pub mod capacity;
pub mod explorer;
pub mod intelligence;
pub mod monitoring;
pub mod openai;
pub mod jobs;
pub mod pricing;
pub mod receipts;
pub mod registry;

use serde::{Deserialize, Serialize};

/// Items per page unless the caller asks.
pub const PAGE_ITEMS_DEFAULT: usize = 50;

/// `?limit=&cursor=` paging.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Paging {
    /// Items per page, at most the list's own maximum.
    #[param(default = json!(PAGE_ITEMS_DEFAULT))]
    pub limit: Option<usize>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// A page of items with the cursor to the next (absent on the last page).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PageOut<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}
