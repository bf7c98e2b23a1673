//! The dialog store without sockets: observer → writer → redb file → loader, then a worker
//! engine adopting the loaded dialog (timer armed on the owner, BYEs both ways on expiry),
//! all in the engine's virtual time.
//!
//! Checks: confirmed dialogs are stored; ended ones are deleted; ones ended by `Shutdown` are
//! kept; the loader shifts deadlines onto the new engine clock, counts loaded dialogs active,
//! fires `Loaded` and drops expired records.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use sipedge::dialog::id::DialogId;
use sipedge::dialog::profile::Profiles;
use sipedge::dialog::{
    CalleeLeg, Dialog, DialogObserver, DlgEvent, DlgState, EndReason, EventData, Field, Socket,
    Strs,
};
use sipedge::engine::{Engine, LocalAddrs, Output, Settings, Shared};
use sipedge::io::persist::{PersistConfig, start};
use sipedge::wire::Transport;

fn shared(unix_base_ms: u64, boot: u32) -> Arc<Shared> {
    let bound = [(Transport::Udp, "127.0.0.1:5060".parse().unwrap())];
    let s = Shared::new(
        2,
        LocalAddrs::new(&bound, None),
        Settings::default(),
        Profiles::new(&["calls"], &[]).unwrap(),
        1,
        boot,
    );
    s.unix_base_ms.store(unix_base_ms, Relaxed);
    s
}

fn sock(port: u16) -> Socket {
    Socket {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        transport: Transport::Udp,
        local: 0,
        conn: None,
    }
}

/// A confirmed dialog of worker 1, published in `s`, with `deadline_ms` on the engine clock.
fn confirmed(s: &Shared, h_id: u32, call_id: &str, deadline_ms: u64) -> Arc<Dialog> {
    let strs = Strs::new([
        call_id.as_bytes(),
        b"<sip:alice@127.0.0.1:5070>;tag=a1",
        b"sip:alice@127.0.0.1:5070",
        b"a1",
        b"<sip:bob@127.0.0.1:5080>",
        b"sip:bob@127.0.0.1:5080",
        b"sip:bob@127.0.0.1:5080",
        b"sip:alice@127.0.0.1:5070",
        b"",
    ]);
    let d = Dialog::new(DialogId::new(1, 9, h_id), strs, sock(5070), 100, 60, 1);
    d.callee
        .set(CalleeLeg::new(
            b"b1",
            b"<sip:bob@127.0.0.1:5080>;tag=b1",
            b"sip:bob@127.0.0.1:5080",
            b"",
            sock(5080),
        ))
        .unwrap();
    d.advance(&[DlgState::Unconfirmed], DlgState::Confirmed);
    d.deadline_ms.store(deadline_ms, Relaxed);
    let p = s.profiles.load();
    p.set(&d.profiles, p.index("calls").unwrap(), None).unwrap();
    let d = Arc::new(d);
    s.table.insert(d.id, d.clone(), call_id.as_bytes(), b"a1");
    s.stats
        .transition(DlgState::Unconfirmed, DlgState::Confirmed);
    d
}

fn fire(s: &Shared, event: DlgEvent, d: &Dialog) {
    s.callbacks.fire(&EventData {
        event,
        dialog: d,
        msg: None,
        code: 0,
        side: None,
    });
}

#[derive(Default)]
struct CountLoaded(AtomicUsize);
impl DialogObserver for CountLoaded {
    fn on_event(&self, ev: &EventData<'_>) {
        assert_eq!(ev.event, DlgEvent::Loaded);
        self.0.fetch_add(1, Relaxed);
    }
}

#[test]
fn store_load_adopt_expire() {
    let dir = std::env::temp_dir().join(format!("sipedge-persist-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = PersistConfig {
        path: dir.join("d.redb"),
        update_period_ms: 20,
        recover: false,
    };

    // Run 1: unix time 1_000_000 at engine time 0.
    let s1 = shared(1_000_000, 0xAAAA);
    let (w1, r1) = start(&s1, &cfg, 0).unwrap();
    assert_eq!(r1.loaded, 0);
    let kept = confirmed(&s1, 7, "kept", 60_000);
    let ended = confirmed(&s1, 8, "ended", 60_000);
    let shut = confirmed(&s1, 9, "shut", 60_000);
    let stale = confirmed(&s1, 10, "stale", 5_000);
    for d in [&kept, &ended, &shut, &stale] {
        fire(&s1, DlgEvent::Confirmed, d);
    }
    ended.try_end(EndReason::ByeCaller, 1_000);
    fire(&s1, DlgEvent::Terminated, &ended);
    // The engine's shutdown path: ended with reason Shutdown, then removed from the table.
    shut.try_end(EndReason::Shutdown, 1_000);
    fire(&s1, DlgEvent::Terminated, &shut);
    w1.stop();
    assert_eq!(w1.stats.errors.load(Relaxed), 0);
    assert_eq!(w1.stats.dropped.load(Relaxed), 0);

    // Run 2 starts 10 s later (unix 1_010_000 at its engine time 0), at engine time 500.
    let s2 = shared(1_010_000, 0xBBBB);
    let seen = Arc::new(CountLoaded::default());
    s2.callbacks.register(DlgEvent::Loaded.bit(), seen.clone());
    let (w2, r2) = start(&s2, &cfg, 500).unwrap();
    assert_eq!((r2.loaded, r2.expired, r2.corrupt), (2, 1, 0), "{r2:?}");
    assert_eq!(seen.0.load(Relaxed), 2);
    assert_eq!(s2.stats.snapshot().active_dialogs, 2);
    assert_eq!(
        s2.profiles
            .load()
            .size(s2.profiles.load().index("calls").unwrap(), None),
        2
    );
    assert!(s2.table.get(ended.id).is_none());
    let k = s2.table.get(kept.id).expect("kept dialog loaded");
    assert!(s2.table.get(shut.id).is_some(), "shutdown must not delete");
    assert_eq!(k.state(), DlgState::Confirmed);
    assert_eq!(k.loaded_boot(), Some(0xAAAA));
    assert_eq!(
        k.deadline_ms.load(Relaxed),
        50_000,
        "deadline moved onto the new clock"
    );
    assert_eq!(k.strs.get(Field::CallId), b"kept");

    // Worker 1 owns both: it arms their timers and mints ids above theirs.
    let mut e0 = Engine::new(s2.clone(), 0, 500);
    assert_eq!(e0.poll_timeout(), None, "worker 0 does not own them");
    let mut e1 = Engine::new(s2.clone(), 1, 500);
    // The wheel reports a slot boundary at or before the deadline.
    assert!(
        e1.poll_timeout()
            .is_some_and(|t| (500..=50_000).contains(&t))
    );
    let mut out = Output::with_capacity(1 << 16, 16);
    e1.handle_timeout(50_000, &mut out);
    let byes = out
        .tx
        .iter()
        .filter(|t| {
            out.buf
                .get(t.start..t.end)
                .is_some_and(|b| b.starts_with(b"BYE "))
        })
        .count();
    assert_eq!(byes, 4, "BYE both ways for both dialogs");
    assert_eq!(s2.stats.snapshot().active_dialogs, 0);
    let _ = &mut e0;
    w2.stop();
    // The expiry deleted both records: a third run loads nothing.
    let s3 = shared(1_100_000, 0xCCCC);
    let (w3, r3) = start(&s3, &cfg, 0).unwrap();
    assert_eq!((r3.loaded, r3.expired), (0, 0), "{r3:?}");
    w3.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_fields_are_validated() {
    use sipedge::config::Config;
    let ok = Config::from_toml_str("[dialog]\ndb_url = \"/tmp/x.redb\"\ndb_mode = 2\n").unwrap();
    assert_eq!(
        (
            ok.dialog.db_url.as_str(),
            ok.dialog.db_mode,
            ok.dialog.db_update_period
        ),
        ("/tmp/x.redb", 2, 1000)
    );
    let d = Config::default().dialog;
    assert_eq!((d.db_url.as_str(), d.db_mode), ("", 0), "off by default");
    for (text, want) in [
        ("[dialog]\ndb_mode = 1\n", "db_mode 1 not supported"),
        ("[dialog]\ndb_mode = 2\n", "needs db_url"),
        (
            "[dialog]\ndb_update_period = 50\n",
            "db_update_period 50 ms out of range",
        ),
    ] {
        let e = Config::from_toml_str(text).unwrap_err().to_string();
        assert!(e.contains(want), "{text:?}: {e}");
    }
}
