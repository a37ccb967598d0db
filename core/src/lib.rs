//! aitbc domain core.
