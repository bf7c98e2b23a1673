//! # sipedge
//!
//! A SIP edge proxy with dialog tracking (Kamailio `dialog_ng` semantics).
//!
//! ```text
//! socket (worker N, SO_REUSEPORT) --recv batch--> wire::parse --> engine::handle_datagram(inbound, &mut out)
//!    Via branch -> txn (INVITE transactions, per-worker table)   did -> dialog (shared table)
//!    policy (rules: profiles, limits, timeout, target)          timer (per-worker wheel)
//!  <--send batch-- out: transmits + timer arms + cross-worker commands  <-- wire::Edits
//! ```
//!
//! ## Modules, bottom up
//! - [`wire`]: bytes to borrowed views and back through an edit list; owns [`wire::Transport`].
//!   [`timer`] (the wheel) and [`stats`] (per-worker counters) sit beside it.
//! - [`flood`]: lock-free rate cells and bans (flood control, rate pipes, per-profile call
//!   rates), sans-IO.
//! - [`dialog`] (records, the shared table, profiles, the store) and [`policy`] (rules).
//! - [`config`]: the TOML file, validated, and its live copy; [`txn`]: INVITE transaction state.
//! - [`engine`]: routing of one datagram, timer or command; its settings are built from a
//!   config snapshot ([`engine::Settings::from_config`], [`engine::apply_snapshot`]).
//! - [`mgmt`]: JSON-RPC and Prometheus text over snapshots of the engine; it imports no `io`.
//! - [`io`]: sockets, threads, the clock, the management HTTP listener, the process.
//!
//! ## Transactions
//! An INVITE transaction is RFC 3261 §17's state machines, sans-IO: the server transaction
//! upstream ([`txn::ist`]: 100 Trying, retransmissions absorbed, Timers G/H/I/L) and a client
//! transaction per fork ([`txn::ict`]: Timers A/B/C/D, CANCEL, the ACK of a non-2xx final),
//! with the best final (§16.7) between them; requests the proxy sends on its own run
//! [`txn::nict`]. Their timer values are `[transaction]` (T1, T2, Timer B) and `[dialog]
//! fr_inv_timer` (Timer C). The INVITE and each forwarded copy are kept once with their spans
//! ([`wire::Kept`]) and never parsed again. Transactions live in a per-worker table
//! ([`txn::TxnTable`]), owned by the worker that created the dialog. Our Via branch names that worker and the slot, so a
//! response finds its transaction in O(1) (the dialog cookie in the branch must match the
//! slot's; timer entries carry the slot's generation, so a reused slot never takes a stale
//! one). The dialog keeps only the slot (`txn_slot`), through which a CANCEL, an ACK or a
//! retransmitted INVITE from upstream finds the transaction; a packet that lands on another
//! worker is handed to the owner.
//!
//! ## Forks
//! A dialog holds one early leg per To-tag seen in provisional replies. The first 2xx confirms
//! its leg and CANCELs the other branches. A 2xx from a second fork that arrives anyway (a
//! race) is counted, and relayed upstream for the caller to end; with `[dialog] end_on_race`
//! the proxy ends it itself instead: it ACKs and BYEs that 2xx (`Reason: SIP;cause=200;
//! text="Call completed elsewhere"`) and does not relay it.
//!
//! ## Invariants
//! - Everything outside [`io`] is sans-IO: no sockets, no threads, no clock. Time comes in as a
//!   `now` argument (milliseconds, `u64`) and bytes as `&[u8]`.
//! - The packet path never panics on input: malformed messages are answered or dropped and
//!   counted.
//! - Every way a dialog ends moves it to `DELETED` in one atomic step, so statistics, profile
//!   releases and callbacks happen exactly once.
//! - Imports run one way, down the list above: no module imports one above it.

pub mod config;
pub mod dialog;
pub mod engine;
pub mod flood;
pub mod hash;
pub mod io;
pub mod mgmt;
pub mod policy;
pub mod stats;
pub mod timer;
pub mod txn;
pub mod wire;
