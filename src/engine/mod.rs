//! The proxy engine: order of operations for one datagram, one timer tick or one command.
//!
//! Sans-IO: [`Engine::handle_datagram`], [`Engine::handle_timeout`] and
//! [`Engine::handle_command`] take `now` in milliseconds and write what must be sent into a
//! caller-owned [`Output`]; [`Engine::poll_timeout`] says when to call back.
//!
//! ## Ownership and threads
//! One `Engine` per worker, used through `&mut self` only. What all workers share (the dialog
//! table, profiles, statistics, settings) lives in [`Shared`] behind an `Arc`. INVITE
//! transaction state (upstream request, branches, timers) is owned by the worker that created
//! the dialog; a packet of that transaction that lands on another worker is handed to the
//! owner ([`Output::handoff`]), so no lock guards transaction state. Sequential in-dialog
//! requests and their responses are handled on whichever worker receives them, through
//! atomics in the record.
//!
//! ## INVITE transactions
//! The state machines are in [`crate::txn`]; the engine routes to them and applies what they
//! ask for: `invite` (a new INVITE: policy, targets, dialog, the transaction and its
//! branches), `upstream` (the server transaction: our 100 and finals, retransmissions, the
//! ACK of a non-2xx final, freeing), `branches` (the client transactions: Timer A/B/C/D,
//! CANCEL, ACK), `best_final` (§16.7: the best final, serial forking), `confirm` (early legs
//! and confirmation of the dialog) and `relay` (responses by our Via branch).
//!
//! ## Invariants
//! - Nothing here panics on input; malformed packets are answered or dropped and counted.
//! - No heap allocation per packet in the steady state: `Output` buffers are reused; allocation
//!   happens once per dialog/transaction.
//! - Every end of a dialog goes through [`Engine::end_dialog`], which acts only for the winner
//!   of the atomic transition to `Deleted`.

mod addr;
mod api;
mod best_final;
mod branches;
mod bridge;
mod confirm;
mod dialog_timer;
mod dialogs;
mod forward;
mod gate;
mod generated;
mod invite;
mod output;
mod policy_glue;
mod proxy;
mod refer;
mod relay;
mod request;
mod restart;
mod settings;
mod shared;
mod timers;
mod upstream;

pub use addr::{Listener, LocalAddrs, parse_ip};
pub use bridge::{BRIDGE_TIMEOUT, BridgeCall, BridgeError, BridgeState};
pub use output::{Inbound, Output, Transmit};
pub use proxy::Engine;
pub use settings::{
    ForkMode, Overload, Settings, TargetGroup, apply_snapshot, set_available_memory,
};
pub use shared::{Command, Notifier, Shared};
pub use timers::TimerItem;
