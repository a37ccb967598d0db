//! JSON schemas (feature `openapi`) of the values whose serde is written by hand: each says what
//! the JSON carries (a string and its grammar), not how Rust holds it. The derived schemas of
//! the structs around them refer to these by name.

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

/// A string of at most `len_max` bytes matching `pattern` where the grammar is that simple,
/// described by `description` (doc comment lines, joined).
pub(crate) fn string(description: &[&str], len_max: usize, pattern: Option<String>) -> RefOr<Schema> {
    let description = description.iter().map(|line| line.trim()).collect::<Vec<_>>().join(" ");
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .min_length(Some(1))
        .max_length(Some(len_max))
        .pattern(pattern)
        .into()
}

/// A money or metering value: an unsigned decimal string with at most `decimals` places
/// (exactly what `money::parse_fixed` accepts).
pub(crate) fn decimal(what: &str, decimals: u32, len_max: usize) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!("{what} as a decimal string with at most {decimals} decimal places, never a JSON number")))
        .max_length(Some(len_max))
        .pattern(Some(crate::money::decimal_pattern(decimals)))
        .into()
}
