//! `loadgen`: an open-loop SIP load generator (UAC and UAS) with coordinated-omission-free
//! latency histograms.
//!
//! Layout: [`sipmsg`] scans and builds SIP text; [`uac`] and [`uas`] are sans-IO state
//! machines (`handle(now_us, ..)`, `handle_timeout`, `poll_timeout`, output into a caller-owned
//! [`outbox::Outbox`]); [`scenario`] holds the open-loop schedule and scenario mix; [`stats`]
//! the histograms and counters; [`report`] the summary, `.hgrm`, JSON and SVG output. Only
//! [`io`] touches sockets, threads and the clock.

pub mod io;
pub mod outbox;
pub mod report;
pub mod scenario;
pub mod sipmsg;
pub mod stats;
pub mod uac;
pub mod uas;
