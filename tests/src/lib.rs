//! End-to-end tests across crates live in `tests/tests/`; this library holds their shared
//! helpers as they arrive.
