//! The `loadgen` binary end to end: flags, summary, JSON/hgrm files and the `--max-failed`
//! exit code.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::process::Command;

fn loadgen(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .output()
        .expect("run loadgen");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn both_mode_writes_summary_json_and_hgrm() {
    let uas = common::free_port().to_string();
    let dir = std::env::temp_dir().join(format!("loadgen-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("s.json");
    let prefix = dir.join("h");
    let (code, out, err) = loadgen(&[
        "both",
        "--uas",
        &uas,
        "--rate",
        "300",
        "--calls",
        "400",
        "--hold",
        "5ms",
        "--mix",
        "basic=8,reject=1,cancel=1",
        "--json",
        json.to_str().unwrap(),
        "--hgrm",
        prefix.to_str().unwrap(),
        "--max-failed",
        "0",
    ]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("calls: started 400 ok 400 failed 0"), "{out}");
    assert!(err.contains("offered"), "progress line on stderr: {err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["ok"], 400);
    assert_eq!(v["failed_total"], 0);
    assert!(v["cpu_us_per_call"].as_f64().unwrap() > 0.0);
    let hgrm = std::fs::read_to_string(format!("{}.setup.hgrm", prefix.display())).unwrap();
    assert!(hgrm.contains("Total count    =          400"), "{hgrm}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn failures_above_max_failed_exit_1() {
    let uas = common::free_port().to_string();
    // noanswer needs a proxy to send 408; directly, every call times out.
    let (code, out, _) = loadgen(&[
        "both",
        "--uas",
        &uas,
        "--rate",
        "100",
        "--calls",
        "5",
        "--mix",
        "noanswer",
        "--invite-timeout",
        "300ms",
        "--max-failed",
        "0",
        "--quiet",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("failed 5 invite_timeout=5"), "{out}");
}

#[test]
fn bad_flags_are_rejected() {
    let (code, _, err) = loadgen(&["uac"]);
    assert_eq!(code, 2, "uac without --target: {err}");
    let (code, _, err) = loadgen(&["both", "--mix", "bogus=1"]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown scenario"), "{err}");
    let (code, _, err) = loadgen(&["both", "--hold", "5 parsecs"]);
    assert_ne!(code, 0, "{err}");
    let closed = common::free_port().to_string();
    let (code, _, err) = loadgen(&["uac", "--transport", "tcp", "--target", &closed]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("refused"), "names the problem: {err}");
}
