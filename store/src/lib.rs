//! Store and queue ports with their adapters (filled by the storage issue).
