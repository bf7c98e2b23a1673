//! Management: Kamailio-compatible JSON-RPC methods, Prometheus metrics and the `ctl` CLI.
//!
//! Owns everything an operator talks to. The HTTP listener that calls it lives in `io`
//! (`io::mgmt_http`); this module imports nothing from `io` and is sans-IO except [`ctl`] (a
//! client, used only by the `sipedge ctl` command, never by the proxy). The RPC modules form
//! one line: [`rpc`] (envelope) -> [`methods`] (dispatch) -> [`pager`], [`statistics`] ->
//! [`protocol`] (error codes, parameters, result writers).
//!
//! ## Invariants
//! - Management never runs on a worker thread and only reads snapshots through
//!   [`backend::MgmtBackend`], so it cannot stall the packet path.
//! - Method names, parameters and output fields follow Kamailio's `dialog` module (5.6) so
//!   `kamcmd`-style scripts port over unchanged.

pub mod backend;
pub mod ctl;
pub mod engine_backend;
pub mod methods;
pub mod metrics;
pub mod model;
pub mod pager;
pub mod protocol;
pub mod rpc;
pub mod statistics;
pub mod table;

pub use backend::MgmtBackend;
pub use model::{ActiveStats, BackendError, DialogInfo, DialogSelector, DialogStats, LegInfo};
pub use rpc::handle_jsonrpc;
