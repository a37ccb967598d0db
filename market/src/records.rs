//! Entities to and from store items: an entity serializes to the item's attributes, next to its
//! index attributes and any numeric counters the store adds to atomically.

use crate::MarketError;
use aitbc_store::keys::IndexKey;
use aitbc_store::{Item, Key};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The item for `entity` at `key`, in the given indexes.
pub fn to_item<T: Serialize>(key: Key, entity: &T, indexes: &[IndexKey]) -> Item {
    let serde_json::Value::Object(mut attrs) = serde_json::to_value(entity).expect("entities serialize") else {
        panic!("an entity serializes to a JSON object");
    };
    for index in indexes {
        index.apply(&mut attrs);
    }
    Item { key, attrs }
}

/// The entity stored in `item` (index and counter attributes are ignored by the entity types).
pub fn from_item<T: DeserializeOwned>(item: &Item) -> Result<T, MarketError> {
    serde_json::from_value(serde_json::Value::Object(item.attrs.clone()))
        .map_err(|e| MarketError::Internal(format!("stored item ({}, {}) does not parse: {e}", item.key.pk, item.key.sk)))
}

/// An integer attribute that must be there.
pub fn int(item: &Item, attr: &str) -> Result<i64, MarketError> {
    item.int(attr).ok_or_else(|| MarketError::Internal(format!("item ({}, {}) lacks {attr}", item.key.pk, item.key.sk)))
}
