//! The dialog table's `(Call-ID, From-tag)` index on the INVITE and BYE paths: one dialog's
//! life (publish, spiral lookup, removal) and a lookup hit in a table of 50,000 dialogs,
//! against a naive `Mutex<HashMap<(Vec<u8>, Vec<u8>), DialogId>>` with owned string keys
//! (plus the same `by_id` papaya map) in the same run.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sipedge::dialog::id::DialogId;
use sipedge::dialog::table::{CallIdentity, ConcurrentMap, DialogTable};

const HELD: u32 = 50_000;

/// A record that knows its own `(Call-ID, From-tag)`, like `Dialog`.
struct Rec {
    call: Vec<u8>,
    tag: Vec<u8>,
}

impl CallIdentity for Rec {
    fn call_id(&self) -> &[u8] {
        &self.call
    }
    fn ftag(&self) -> &[u8] {
        &self.tag
    }
}

/// Owned `(Call-ID, From-tag)` key of the naive index.
type OwnedKey = (Vec<u8>, Vec<u8>);

/// Naive baseline: the record map plus one lock around an index with owned keys.
#[derive(Default)]
struct Naive {
    by_id: ConcurrentMap<DialogId, Arc<Rec>>,
    by_call: Mutex<HashMap<OwnedKey, DialogId>>,
}

impl Naive {
    fn insert(&self, id: DialogId, r: Arc<Rec>) {
        let key = (r.call.clone(), r.tag.clone());
        self.by_id.insert(id, r);
        if let Ok(mut m) = self.by_call.lock() {
            m.insert(key, id);
        }
    }
    fn find(&self, call: &[u8], tag: &[u8]) -> Option<DialogId> {
        let m = self.by_call.lock().ok()?;
        m.get(&(call.to_vec(), tag.to_vec())).copied()
    }
    fn remove(&self, id: DialogId, call: &[u8], tag: &[u8]) {
        self.by_id.remove(&id);
        if let Ok(mut m) = self.by_call.lock() {
            m.remove(&(call.to_vec(), tag.to_vec()));
        }
    }
}

fn call_of(i: u32) -> (Vec<u8>, Vec<u8>) {
    (
        format!("{i:016x}-5f3a9c01@loadgen").into_bytes(),
        format!("{i:016x}").into_bytes(),
    )
}

fn rec(i: u32) -> Arc<Rec> {
    let (call, tag) = call_of(i);
    Arc::new(Rec { call, tag })
}

fn bench(c: &mut Criterion) {
    let table: DialogTable<Rec> = DialogTable::new();
    let naive = Naive::default();
    for i in 0..HELD {
        let r = rec(i);
        table.insert(DialogId::new(0, i, i), r.clone(), &r.call, &r.tag);
        naive.insert(DialogId::new(0, i, i), r);
    }
    let (probe_call, probe_tag) = call_of(HELD / 2);
    let fresh = rec(HELD + 1);
    // Every dialog gets a new id, as from the real generator.
    let mut next = HELD;
    let mut new_id = move || {
        next = next.wrapping_add(1).max(HELD + 1);
        DialogId::new(0, next, next)
    };

    let mut g = c.benchmark_group("dialog_index");
    g.throughput(Throughput::Elements(1));
    g.bench_function("lookup_hit/striped", |b| {
        b.iter(|| table.find_by_callid_ftag(black_box(&probe_call), black_box(&probe_tag)))
    });
    g.bench_function("lookup_hit/naive", |b| {
        b.iter(|| naive.find(black_box(&probe_call), black_box(&probe_tag)))
    });
    // One dialog's index work: spiral check (miss), publish, removal.
    g.bench_function("dialog_life/striped", |b| {
        b.iter(|| {
            let id = new_id();
            black_box(table.find_by_callid_ftag(&fresh.call, &fresh.tag));
            table.insert(id, fresh.clone(), &fresh.call, &fresh.tag);
            table.remove(id, &fresh.call, &fresh.tag)
        })
    });
    g.bench_function("dialog_life/naive", |b| {
        b.iter(|| {
            let id = new_id();
            black_box(naive.find(&fresh.call, &fresh.tag));
            naive.insert(id, fresh.clone());
            naive.remove(id, &fresh.call, &fresh.tag)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
