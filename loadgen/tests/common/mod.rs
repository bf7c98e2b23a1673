//! Helpers shared by the real-socket tests: free ports and a default run configuration.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use loadgen::io::{Mode, RunConfig};
use loadgen::scenario::{HoldDist, Mix};

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr")
}

/// A UAC+UAS run of `calls` calls at `rate` through `target` to the UAS on `listen`.
pub fn config(
    mode: Mode,
    target: SocketAddr,
    listen: SocketAddr,
    rate: f64,
    calls: u64,
) -> RunConfig {
    RunConfig {
        mode,
        target,
        ruri: format!("sip:service@{listen}"),
        listen,
        local_ip: "127.0.0.1".parse().unwrap(),
        rate,
        calls,
        duration: None,
        hold_us: 0,
        hold_dist: HoldDist::Fixed,
        max_concurrent: 100_000,
        threads: 1,
        sockets: 1,
        mix: Mix::single(loadgen::scenario::Scenario::Basic),
        invite_timeout_us: 8_000_000,
        uas_100: true,
        progress: false,
        seed: 1,
        transport: loadgen::io::Transport::Udp,
        uas_port_per_thread: false,
    }
}

/// Duration helper.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
