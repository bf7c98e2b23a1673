//! The only code that touches sockets, threads and the real clock.
pub mod mgmt_http;
