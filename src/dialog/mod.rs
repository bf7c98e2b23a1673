//! Dialog engine: identity (`did`), records, the lock-free table, profiles and callbacks.
//!
//! Invariants: `table` is the only module that imports papaya; every end path of a dialog
//! goes through one atomic state transition to `DELETED` ([`record::Dialog::try_end`]).

pub mod callbacks;
pub mod id;
pub mod persist;
pub mod profile;
pub mod pvars;
pub mod record;
pub mod state;
pub mod stats;
pub mod table;

pub use callbacks::{Callbacks, DialogObserver, DlgEvent, EventData};
pub use record::{CalleeLeg, Dialog, Field, Socket, Strs};
pub use state::{DlgState, EndReason, Side};
pub use stats::{DialogStats, DialogStatsSnapshot};
