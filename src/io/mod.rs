//! The only code that touches sockets, threads and the real clock.
//!
//! - [`socket`]: SO_REUSEPORT sockets, buffers, the reuseport BPF spreader.
//! - [`spread`]: adaptive spreading (how many workers the listen sockets feed).
//! - [`udp`]: `recvmmsg`/`sendmmsg` batches.
//! - [`tcp`]: connections, framing, limits.
//! - [`tcp_gate`]: the process-wide TCP connection caps (total, per peer).
//! - [`worker`]: the pinned mio loop of one worker.
//! - [`run`]: the supervisor that starts and stops workers.
//! - [`app`]: the process: logging, config, signals.
//! - [`mgmt_http`]: the management HTTP listener.
//! - [`persist`]: dialogs stored in a redb file (write-behind) and loaded at start.
//! - [`fault`]: fault injection for the worker-restart tests (debug builds only).

pub mod app;
pub mod fault;
pub mod mgmt_http;
#[allow(clippy::disallowed_methods)] // io owns the clock
pub mod persist;
#[allow(clippy::disallowed_methods)] // io owns the clock
pub mod run;
pub mod socket;
#[allow(clippy::disallowed_methods)] // io owns the clock
pub mod spread;
pub mod tcp;
pub mod tcp_gate;
pub mod udp;
#[allow(clippy::disallowed_methods)] // io owns the clock
pub mod worker;
