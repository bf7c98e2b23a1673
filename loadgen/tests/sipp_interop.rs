//! Interop with SIPp (`/usr/bin/sipp`, Debian sip-tester 3.6) over UDP and TCP on 127.0.0.1:
//! loadgen UAC -> SIPp UAS and SIPp UAC -> loadgen UAS, both with 0 failures. The scenario
//! files are copies of the benchmark's `shared/bench/{uac,uas}.xml`. Skipped (with a note)
//! when `sipp` is not installed.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use loadgen::io::{self, Mode, Transport};
use loadgen::stats::Metric;

fn sipp() -> Option<&'static str> {
    let ok = Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        eprintln!("sipp not installed: skipping interop test");
    }
    ok.then_some("sipp")
}

fn scenario(name: &str) -> String {
    format!("{}/tests/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn loadgen_uac_to_sipp_uas() {
    loadgen_uac_to_sipp_uas_on(Transport::Udp);
}

#[test]
fn loadgen_uac_to_sipp_uas_tcp() {
    loadgen_uac_to_sipp_uas_on(Transport::Tcp);
}

#[test]
fn sipp_uac_to_loadgen_uas() {
    sipp_uac_to_loadgen_uas_on(Transport::Udp);
}

#[test]
fn sipp_uac_to_loadgen_uas_tcp() {
    sipp_uac_to_loadgen_uas_on(Transport::Tcp);
}

fn sipp_transport(tp: Transport) -> &'static str {
    match tp {
        Transport::Udp => "u1",
        Transport::Tcp => "t1",
    }
}

fn loadgen_uac_to_sipp_uas_on(tp: Transport) {
    let Some(sipp) = sipp() else { return };
    let uas = common::free_port();
    let dir = tempdir();
    let mut child = Command::new(sipp)
        .args([
            "-sf",
            &scenario("sipp_uas.xml"),
            "-p",
            &uas.port().to_string(),
        ])
        .args([
            "-i",
            "127.0.0.1",
            "-t",
            sipp_transport(tp),
            "-nostdin",
            "-timeout",
            "30s",
        ])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sipp");
    std::thread::sleep(common::ms(500));
    let mut cfg = common::config(Mode::Uac, uas, uas, 200.0, 300);
    cfg.hold_us = 10_000;
    cfg.transport = tp;
    let r = io::run(&cfg, Arc::new(AtomicBool::new(false)));
    let _ = child.kill();
    let _ = child.wait();
    let r = r.expect("run");
    let c = &r.uac.c;
    assert_eq!((c.ok, c.failed_total(), c.stray), (300, 0, 0), "{c:?}");
    assert_eq!(
        r.uac.hist(Metric::Invite100).len(),
        0,
        "SIPp's UAS sends no 100"
    );
    assert_eq!(r.uac.hist(Metric::Invite200).len(), 300);
    assert_eq!(r.uac.hist(Metric::Bye200).len(), 300);
}

fn sipp_uac_to_loadgen_uas_on(tp: Transport) {
    let Some(sipp) = sipp() else { return };
    let uas = common::free_port();
    let uac_port = common::free_port().port();
    let stop = Arc::new(AtomicBool::new(false));
    let mut cfg = common::config(Mode::Uas, uas, uas, 1.0, 0);
    cfg.transport = tp;
    let st = stop.clone();
    let h = std::thread::spawn(move || io::run(&cfg, st));
    std::thread::sleep(common::ms(300));
    let dir = tempdir();
    let run = Command::new(sipp)
        .arg(uas.to_string())
        .args([
            "-sf",
            &scenario("sipp_uac.xml"),
            "-p",
            &uac_port.to_string(),
        ])
        .args([
            "-i",
            "127.0.0.1",
            "-t",
            sipp_transport(tp),
            "-nostdin",
            "-m",
            "300",
            "-r",
            "300",
        ])
        .args([
            "-d",
            "10",
            "-timeout",
            "20s",
            "-timeout_error",
            "-recv_timeout",
            "5000",
        ])
        .current_dir(&dir)
        .output()
        .expect("run sipp");
    std::thread::sleep(common::ms(300));
    stop.store(true, Ordering::Relaxed);
    let r = h.join().unwrap().expect("uas run");
    assert!(
        run.status.success(),
        "sipp UAC reported failed calls: {}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stdout)
    );
    let c = &r.uas.c;
    assert_eq!((c.uas_calls, c.uas_ok), (300, 300), "{c:?}");
    assert_eq!((c.failed_total(), c.stray), (0, 0), "{c:?}");
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "loadgen-sipp-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
