//! The dialog store failing under a running proxy, for real: the test lowers the proxy's
//! file-size limit (`RLIMIT_FSIZE` = 0, through `prlimit(2)` on its pid), so every write redb
//! makes fails with `EFBIG` as on a full disk, then lifts it again.
//!
//! Checks: the end of a call that happens while the store fails is kept and retried, not
//! dropped: failures and retries are counted in `/metrics` (`failing` 1 meanwhile), exactly
//! one log line reports the failure and one the recovery; after recovery the delete is
//! written, and after a restart the ended call is *not* loaded again while the call that
//! goes on is. The proxy is not killed by `SIGXFSZ`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use crate::common::TempDir;
use crate::ops_safety::{Sipedge, config};
use crate::persist_restart::{Phones, collect, wait_for};
use serde_json::Value;

/// Sets the soft file-size limit of process `pid` (`None` = unlimited).
fn limit_file_size(pid: u32, soft: Option<u64>) {
    let new = libc::rlimit {
        rlim_cur: soft.unwrap_or(libc::RLIM_INFINITY),
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `new` is a valid rlimit; a null old-limit pointer is allowed; the pid is our
    // child, alive (not reaped) while the test holds its guard.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

fn call_ids(p: &Sipedge) -> Vec<String> {
    let mut out = Vec::new();
    collect(&p.mgmt.rpc("dlg.list", Value::Null), &mut out);
    let mut ids: Vec<String> = out
        .iter()
        .filter_map(|d| d["call-id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

fn count(log: &str, what: &str) -> usize {
    log.lines().filter(|l| l.contains(what)).count()
}

#[test]
fn a_failing_store_keeps_ended_calls_ended_across_a_restart() {
    let dir = TempDir::new("persist-failure");
    let db = dir.join("dialogs.redb");
    let cfg = config(
        &dir,
        &format!(
            "[dialog]\ndb_url = \"{}\"\ndb_mode = 2\ndb_update_period = 100\n",
            db.display()
        ),
    );
    let args = ["--workers", "1", "--config", cfg.to_str().unwrap()];
    let p = Sipedge::start(&args, &[]);
    let phones = Phones::new(p.sip);
    let ok_ended = phones.call("ends-while-failing");
    let _ok_kept = phones.call("goes-on");
    p.wait_metric("sipedge_dialog_db_written_total", 2.0);
    assert_eq!(p.metric("sipedge_dialog_db_failing"), Some(0.0));

    // The disk is "full": every write of the proxy fails with EFBIG.
    limit_file_size(p.pid(), Some(0));
    phones.bye(&ok_ended, "ends-while-failing");
    wait_for("a retried failure", || {
        p.metric("sipedge_dialog_db_write_retries_total")
            .is_some_and(|v| v >= 2.0)
    });
    assert_eq!(p.metric("sipedge_dialog_db_failing"), Some(1.0));
    assert_eq!(p.metric("sipedge_dialog_db_pending"), Some(1.0));
    assert_eq!(p.metric("sipedge_dialog_db_deleted_total"), Some(0.0));
    assert!(
        p.metric("sipedge_dialog_db_write_failures_total")
            .is_some_and(|v| v >= 3.0)
    );

    // Space again: the kept delete is written.
    limit_file_size(p.pid(), None);
    p.wait_metric("sipedge_dialog_db_failing", 0.0);
    assert_eq!(p.metric("sipedge_dialog_db_deleted_total"), Some(1.0));
    assert_eq!(p.metric("sipedge_dialog_db_pending"), Some(0.0));
    assert_eq!(p.metric("sipedge_dialog_db_dropped_total"), Some(0.0));
    let log = p.log();
    assert_eq!(count(&log, "dialog db: write failed"), 1, "{log}");
    assert_eq!(count(&log, "dialog db: writes recovered"), 1, "{log}");
    assert_eq!(call_ids(&p), vec!["goes-on".to_string()]);
    p.stop();

    // The next start loads the call that goes on, not the one that ended.
    let p = Sipedge::start(&args, &[]);
    assert_eq!(call_ids(&p), vec!["goes-on".to_string()], "{}", p.log());
    assert_eq!(p.mgmt.active_dialogs().all, 1);
    p.stop();
}
