//! Dialog engine: identity (`did`), records, the lock-free table, profiles and callbacks.
//!
//! Invariants: `table` is the only module that imports papaya; every end path of a dialog
//! goes through one atomic state transition to `DELETED`.

pub mod id;
pub mod profile;
pub mod table;
