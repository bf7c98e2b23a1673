//! The integration tests of `sipedge`, linked into one test binary (`cargo test --test it`)
//! instead of one binary per file: each former `tests/X.rs` is the module `X` here, so a
//! single test is still selected by its file name, e.g. `cargo test --test it flows_proxy::`.
//!
//! Shared support is declared once: [`common`] (real sockets, child processes, the `sipedge`
//! binary, SIPp) and [`flows`] (the virtual-time engine harness; it stays in `tests/flows/`
//! because the `alloc` binary and two examples include it by path). Everything in this binary
//! runs in parallel threads of one process, so tests keep no fixed ports (ports come from
//! `common::free_udp_port`, which never hands one out twice per process, or port 0) and no
//! shared scratch paths.
//!
//! Tests that need a process to themselves (a counting `#[global_allocator]`) are in the
//! `alloc` binary (`tests/alloc/`). Data stays where it was: `tests/corpus/`, `tests/sipp/`;
//! proptest's regression seeds of this binary are in `tests/proptest-regressions/`.

mod common;
#[path = "../flows/mod.rs"]
#[allow(clippy::unwrap_used, clippy::expect_used)] // test harness: a panic is a failure
mod flows;

mod config_examples;
mod dialog_model;
mod dialog_stress;
mod e2e_mgmt;
mod e2e_policy;
mod engine_robust;
mod flood_socket;
mod flows_api;
mod flows_dialog;
mod flows_flood;
mod flows_policy;
mod flows_proxy;
mod flows_syntax;
mod flows_txn;
mod generated_bridge;
mod generated_bye;
mod loadgen_through_proxy;
mod mgmt_hardening;
mod mgmt_rpc;
mod ops_safety;
mod persist_failure;
mod persist_restart;
mod persist_store;
mod policy_rules;
mod request_source;
mod second_instance;
mod sipp_interop;
mod spread_workers;
mod tcp_abuse;
mod wire_corpus;
mod wire_proptest;
