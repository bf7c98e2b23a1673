//! # sipedge
//!
//! A SIP edge proxy with dialog tracking (Kamailio `dialog_ng` semantics).
//!
//! ```text
//! socket (worker N, SO_REUSEPORT) --recv batch--> wire::parse --> engine::handle(now, src, msg, &mut out)
//!    policy (rules: profiles, limits, timeout, target)   dialog (table lookup by did, state machine)
//!    txn (INVITE state embedded in the dialog)           timer (per-core wheel)
//!  <--send batch-- out: transmits  <-- wire::edit (Via / Record-Route / Route / Max-Forwards)
//! ```
//!
//! ## Invariants
//! - Everything outside [`io`] is sans-IO: no sockets, no threads, no clock. Time comes in as a
//!   `now` argument (milliseconds, `u64`) and bytes as `&[u8]`.
//! - The packet path never panics on input: malformed messages are answered or dropped and
//!   counted.
//! - Every way a dialog ends moves it to `DELETED` in one atomic step, so statistics, profile
//!   releases and callbacks happen exactly once.

pub mod config;
pub mod dialog;
pub mod engine;
pub mod io;
pub mod mgmt;
pub mod policy;
pub mod stats;
pub mod timer;
pub mod txn;
pub mod wire;
