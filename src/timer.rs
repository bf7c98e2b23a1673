//! Per-worker hierarchical timing wheel: 6 levels × 64 slots, 1 ms ticks.
//!
//! Owns: the scheduling of opaque items `T` by deadline (milliseconds on the caller's clock).
//! One wheel per worker, driven through `&mut self`; it is never shared and never reads the
//! clock: time only comes in through [`Wheel::new`] and [`Wheel::poll`].
//!
//! # Layout
//! Level `k` has 64 slots, each covering `64^k` ms, so level `k` spans `64^(k+1)` ms and the
//! wheel spans `64^6` ms (about 2.2 years). Each level keeps a `u64` occupancy bitmap; the next
//! occupied slot is found by rotating the bitmap to the current slot and taking
//! `trailing_zeros` (the scheme of tokio's `runtime/time/wheel`). Entries live in a slab (a
//! `Vec` of nodes plus a free list) and are linked into slot lists by index, so an insert
//! allocates nothing once the slab has grown to the peak number of live timers.
//!
//! # Invariants
//! - `elapsed` only moves forward; every item with `deadline <= elapsed` has been fired,
//!   except items inserted with such a deadline afterwards, which sit in the `pending` list
//!   and fire on the next [`Wheel::poll`].
//! - An item at level `k` lies in the same `64^(k+1)` window as `elapsed` but not in the same
//!   `64^k` slot (for `k > 0`); so the lowest occupied level always holds the earliest slot.
//!   Deadlines further out than [`MAX_AHEAD_MS`] are scheduled at `elapsed + MAX_AHEAD_MS` and
//!   re-scheduled when that slot comes up, so any `u64` deadline is accepted.
//! - Items never fire early (`deadline <= now` for everything [`Wheel::poll`] returns) and
//!   never late: a poll at `now` returns every item whose deadline is `<= now`.
//! - A [`TimerKey`] carries the slot generation; a stale key (fired, cancelled) is detected
//!   and ignored, never aliased to a newer entry.
//!
//! # Lazy reschedule (how dialogs use this)
//! A dialog's true deadline is an atomic inside the dialog, pushed later by any worker with a
//! single store. The wheel entry is *not* moved on every refresh: when the entry fires, the
//! owning worker loads the true deadline and, if it moved beyond `now`, re-arms with
//! [`Wheel::insert`] (or keeps the key with [`Wheel::reset`] before it fires). Only the worker
//! that owns the wheel touches it; other workers never message it to refresh a timer.

/// Number of levels in the wheel.
const LEVELS: usize = 6;
/// Bits of slot index per level (64 slots).
const SLOT_BITS: u32 = 6;
/// Slots per level.
const SLOTS: usize = 1 << SLOT_BITS;
/// Milliseconds covered by the whole wheel (`64^6`).
const WHEEL_RANGE: u64 = 1 << (SLOT_BITS as u64 * LEVELS as u64);
/// Milliseconds covered by one top-level slot (`64^5`).
const TOP_SLOT_RANGE: u64 = WHEEL_RANGE / SLOTS as u64;
/// Furthest a deadline is scheduled ahead of `elapsed` in one go (63 top-level slots, so a
/// clamped item never lands in the top-level slot `elapsed` is in). Later deadlines are
/// re-scheduled when their clamped slot is processed.
pub const MAX_AHEAD_MS: u64 = WHEEL_RANGE - TOP_SLOT_RANGE - 1;
/// Index of the pending list (after the `LEVELS * SLOTS` wheel slots).
const PENDING: usize = LEVELS * SLOTS;
/// Null link.
const NIL: u32 = u32::MAX;

/// Handle to a scheduled item; `Copy`, and detected as stale once the item fired or was
/// cancelled.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TimerKey {
    index: u32,
    generation: u32,
}

impl TimerKey {
    /// The key as one `u64`, to keep it in an atomic beside what it guards.
    pub fn to_bits(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    /// A key from [`TimerKey::to_bits`]. Any value is accepted: a value that names no live
    /// entry is a stale key, and the wheel ignores it.
    pub fn from_bits(bits: u64) -> Self {
        TimerKey {
            index: bits as u32,
            generation: (bits >> 32) as u32,
        }
    }
}

/// One slab node: either a live entry linked into a slot list or a free-list member.
#[derive(Debug)]
struct Node<T> {
    deadline: u64,
    prev: u32,
    next: u32,
    generation: u32,
    /// Flat slot index (`level * 64 + slot`, or [`PENDING`]) while live.
    slot: u16,
    item: Option<T>,
}

/// Head and tail of one intrusive slot list.
#[derive(Clone, Copy, Debug)]
struct List {
    head: u32,
    tail: u32,
}

const EMPTY: List = List {
    head: NIL,
    tail: NIL,
};

/// Hierarchical timing wheel over items of type `T`. See the module docs.
#[derive(Debug)]
pub struct Wheel<T> {
    elapsed: u64,
    occupied: [u64; LEVELS],
    lists: [List; PENDING + 1],
    nodes: Vec<Node<T>>,
    free: u32,
    len: usize,
}

/// A slot whose start time is the next point at which the wheel must act.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Expiration {
    level: usize,
    slot: usize,
    deadline: u64,
}

/// Level at which an item scheduled at `when` goes, given the wheel is at `elapsed`
/// (`when >= elapsed`, `when - elapsed <= MAX_AHEAD_MS`): the level of the highest bit in
/// which they differ, capped at the top level.
#[inline]
fn level_for(elapsed: u64, when: u64) -> usize {
    let mut masked = (elapsed ^ when) | (SLOTS as u64 - 1);
    if masked >= WHEEL_RANGE {
        masked = WHEEL_RANGE - 1;
    }
    let significant = 63 - masked.leading_zeros() as usize;
    significant / SLOT_BITS as usize
}

/// Slot index of `when` at `level`.
#[inline]
fn slot_for(when: u64, level: usize) -> usize {
    ((when >> (level as u32 * SLOT_BITS)) & (SLOTS as u64 - 1)) as usize
}

/// First occupied slot at or after `from` (wrapping around), or `None` if `occupied == 0`.
#[inline]
fn next_occupied(occupied: u64, from: usize) -> Option<usize> {
    if occupied == 0 {
        return None;
    }
    let rotated = occupied.rotate_right(from as u32 & (SLOTS as u32 - 1));
    Some((rotated.trailing_zeros() as usize + from) % SLOTS)
}

/// Milliseconds covered by one slot of `level`.
#[inline]
fn slot_range(level: usize) -> u64 {
    1u64 << (level as u32 * SLOT_BITS)
}

impl<T> Wheel<T> {
    /// An empty wheel whose clock starts at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self::with_capacity(now_ms, 0)
    }

    /// An empty wheel with room for `cap` timers before the slab grows.
    pub fn with_capacity(now_ms: u64, cap: usize) -> Self {
        Self {
            elapsed: now_ms,
            occupied: [0; LEVELS],
            lists: [EMPTY; PENDING + 1],
            nodes: Vec::with_capacity(cap),
            free: NIL,
            len: 0,
        }
    }

    /// Number of scheduled items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slab nodes allocated so far (live plus free): the high-water mark of live timers. It
    /// may stay high after a burst but must not grow under a constant load.
    pub fn slab_len(&self) -> usize {
        self.nodes.len()
    }

    /// The time up to which the wheel has been polled.
    pub fn elapsed(&self) -> u64 {
        self.elapsed
    }

    /// Schedules `item` at `deadline_ms`; a deadline at or before the wheel's time fires on
    /// the next [`poll`](Self::poll).
    pub fn insert(&mut self, deadline_ms: u64, item: T) -> TimerKey {
        let index = if self.free != NIL {
            let index = self.free;
            if let Some(node) = self.nodes.get_mut(index as usize) {
                self.free = node.next;
                node.deadline = deadline_ms;
                node.item = Some(item);
            }
            index
        } else {
            let index = self.nodes.len() as u32;
            self.nodes.push(Node {
                deadline: deadline_ms,
                prev: NIL,
                next: NIL,
                generation: 0,
                slot: 0,
                item: Some(item),
            });
            index
        };
        self.len += 1;
        self.schedule(index, deadline_ms);
        let generation = self.nodes.get(index as usize).map_or(0, |n| n.generation);
        TimerKey { index, generation }
    }

    /// Removes the item behind `key`; `None` if it already fired or was cancelled.
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        if !self.is_live(key) {
            return None;
        }
        self.unlink(key.index);
        self.release(key.index)
    }

    /// The item behind `key`, if it is live (a key of another wheel may name another item).
    pub fn get(&self, key: TimerKey) -> Option<&T> {
        if !self.is_live(key) {
            return None;
        }
        self.nodes.get(key.index as usize)?.item.as_ref()
    }

    /// Moves the item behind `key` to `new_deadline_ms`; `false` if the key is stale.
    pub fn reset(&mut self, key: TimerKey, new_deadline_ms: u64) -> bool {
        if !self.is_live(key) {
            return false;
        }
        let target = self.list_for(new_deadline_ms);
        let Some(node) = self.nodes.get_mut(key.index as usize) else {
            return false;
        };
        node.deadline = new_deadline_ms;
        if usize::from(node.slot) == target {
            // Same list: order inside a slot does not matter, so nothing to relink.
            return true;
        }
        self.unlink(key.index);
        self.schedule(key.index, new_deadline_ms);
        true
    }

    /// The earliest time at which [`poll`](Self::poll) may have work: a slot boundary that is
    /// never later than the earliest deadline (use it as the event-loop poll timeout).
    pub fn next_deadline(&self) -> Option<u64> {
        if self.lists[PENDING].head != NIL {
            return Some(self.elapsed);
        }
        self.next_expiration().map(|e| e.deadline)
    }

    /// Advances the wheel to `now_ms` and appends every item whose deadline is `<= now_ms`
    /// to `out` as `(deadline, item)`, cascading higher levels down on the way. A `now_ms`
    /// earlier than the wheel's time only fires the pending list.
    pub fn poll(&mut self, now_ms: u64, out: &mut Vec<(u64, T)>) {
        let pending = self.take_list(PENDING);
        self.drain(pending, u64::MAX, out);
        while let Some(exp) = self.next_expiration() {
            if exp.deadline > now_ms {
                break;
            }
            self.elapsed = exp.deadline;
            if let Some(bits) = self.occupied.get_mut(exp.level) {
                *bits &= !(1u64 << exp.slot);
            }
            let list = self.take_list(exp.level * SLOTS + exp.slot);
            self.drain(list, exp.deadline, out);
        }
        if now_ms > self.elapsed {
            self.elapsed = now_ms;
        }
    }

    /// The next slot to process: the first occupied slot of the lowest occupied level.
    fn next_expiration(&self) -> Option<Expiration> {
        for (level, &bits) in self.occupied.iter().enumerate() {
            let range = slot_range(level);
            let now_slot = ((self.elapsed / range) % SLOTS as u64) as usize;
            if let Some(slot) = next_occupied(bits, now_slot) {
                let level_range = range * SLOTS as u64;
                let level_start = self.elapsed & !(level_range - 1);
                let mut deadline = level_start + slot as u64 * range;
                if deadline < self.elapsed {
                    // Wrapped around: only the top level holds slots of the next window.
                    deadline = deadline.saturating_add(level_range);
                }
                return Some(Expiration {
                    level,
                    slot,
                    deadline,
                });
            }
        }
        None
    }

    /// Fires (deadline `<= upto`) or re-schedules every node of a detached list.
    fn drain(&mut self, mut cursor: u32, upto: u64, out: &mut Vec<(u64, T)>) {
        while cursor != NIL {
            let Some(node) = self.nodes.get(cursor as usize) else {
                return;
            };
            let (next, deadline) = (node.next, node.deadline);
            if deadline <= upto {
                if let Some(item) = self.release(cursor) {
                    out.push((deadline, item));
                }
            } else {
                self.schedule(cursor, deadline);
            }
            cursor = next;
        }
    }

    /// Links node `index` into the list for `deadline` relative to `elapsed`.
    fn schedule(&mut self, index: u32, deadline: u64) {
        let flat = self.list_for(deadline);
        let level = Some(flat / SLOTS).filter(|_| flat < PENDING);
        if let Some(bits) = level.and_then(|l| self.occupied.get_mut(l)) {
            *bits |= 1u64 << (flat % SLOTS);
        }
        let tail = self.lists.get(flat).map_or(NIL, |l| l.tail);
        if let Some(node) = self.nodes.get_mut(index as usize) {
            node.slot = flat as u16;
            node.prev = tail;
            node.next = NIL;
        }
        if let Some(prev) = self.nodes.get_mut(tail as usize) {
            prev.next = index;
        }
        if let Some(list) = self.lists.get_mut(flat) {
            if list.head == NIL {
                list.head = index;
            }
            list.tail = index;
        }
    }

    /// Flat list index (`level * 64 + slot`, or [`PENDING`]) for `deadline` at `elapsed`.
    fn list_for(&self, deadline: u64) -> usize {
        if deadline <= self.elapsed {
            return PENDING;
        }
        let when = deadline.min(self.elapsed.saturating_add(MAX_AHEAD_MS));
        let level = level_for(self.elapsed, when);
        level * SLOTS + slot_for(when, level)
    }

    /// Unlinks live node `index` from its slot list, clearing the occupancy bit if emptied.
    fn unlink(&mut self, index: u32) {
        let Some(node) = self.nodes.get(index as usize) else {
            return;
        };
        let (prev, next, flat) = (node.prev, node.next, node.slot as usize);
        match self.nodes.get_mut(prev as usize) {
            Some(p) => p.next = next,
            None => {
                if let Some(l) = self.lists.get_mut(flat) {
                    l.head = next;
                }
            }
        }
        match self.nodes.get_mut(next as usize) {
            Some(n) => n.prev = prev,
            None => {
                if let Some(l) = self.lists.get_mut(flat) {
                    l.tail = prev;
                }
            }
        }
        let emptied = self.lists.get(flat).is_some_and(|l| l.head == NIL);
        if !emptied || flat >= PENDING {
            return;
        }
        if let Some(bits) = self.occupied.get_mut(flat / SLOTS) {
            *bits &= !(1u64 << (flat % SLOTS));
        }
    }

    /// Detaches a whole list and returns its head (the occupancy bit is the caller's job).
    fn take_list(&mut self, flat: usize) -> u32 {
        match self.lists.get_mut(flat) {
            Some(list) => std::mem::replace(list, EMPTY).head,
            None => NIL,
        }
    }

    /// Frees an (already unlinked) node: bumps its generation and pushes it on the free list.
    fn release(&mut self, index: u32) -> Option<T> {
        let free = self.free;
        let node = self.nodes.get_mut(index as usize)?;
        let item = node.item.take();
        node.generation = node.generation.wrapping_add(1);
        node.prev = NIL;
        node.next = free;
        self.free = index;
        self.len -= 1;
        item
    }

    fn is_live(&self, key: TimerKey) -> bool {
        self.nodes
            .get(key.index as usize)
            .is_some_and(|n| n.generation == key.generation && n.item.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn naive_level(elapsed: u64, when: u64) -> usize {
        (0..LEVELS)
            .find(|&k| {
                when >> (SLOT_BITS as usize * (k + 1)) == elapsed >> (SLOT_BITS as usize * (k + 1))
            })
            .unwrap_or(LEVELS - 1)
    }

    #[test]
    fn level_for_matches_naive_on_boundaries() {
        let mut bases = vec![
            0u64,
            1,
            63,
            64,
            65,
            4095,
            4096,
            123_456_789,
            WHEEL_RANGE - 1,
        ];
        bases.extend((0..36).map(|b| (1u64 << b) - 1));
        for &elapsed in &bases {
            for bit in 0..40u32 {
                for delta in [
                    (1u64 << bit).saturating_sub(1),
                    1u64 << bit,
                    (1u64 << bit) + 1,
                ] {
                    if delta == 0 || delta > MAX_AHEAD_MS {
                        continue;
                    }
                    let when = elapsed + delta;
                    assert_eq!(
                        level_for(elapsed, when),
                        naive_level(elapsed, when),
                        "{elapsed} {when}"
                    );
                }
            }
        }
    }

    #[test]
    fn level_for_each_level_span() {
        for level in 0..LEVELS {
            let when = 1u64 << (SLOT_BITS as usize * level);
            assert_eq!(level_for(0, when), level);
            assert_eq!(level_for(0, when.max(64) - 1), level.saturating_sub(1));
        }
        assert_eq!(level_for(0, WHEEL_RANGE + 5), LEVELS - 1);
    }

    #[test]
    fn slot_for_every_level_and_slot() {
        for level in 0..LEVELS {
            for slot in 0..SLOTS as u64 {
                let when = (slot << (SLOT_BITS as usize * level)) + 7 * slot_range(level) * 64 * 3;
                assert_eq!(
                    slot_for(when, level),
                    ((when / slot_range(level)) % 64) as usize
                );
                assert_eq!(
                    slot_for(slot << (SLOT_BITS as usize * level), level),
                    slot as usize
                );
            }
        }
    }

    #[test]
    fn next_occupied_every_rotation() {
        let naive = |bits: u64, from: usize| {
            (0..SLOTS)
                .map(|i| (from + i) % SLOTS)
                .find(|&s| bits & (1u64 << s) != 0)
        };
        let mut maps: Vec<u64> = (0..64).map(|b| 1u64 << b).collect();
        maps.extend([
            0,
            u64::MAX,
            0x8000_0000_0000_0001,
            0x0F0F_0F0F_0F0F_0F0F,
            0xDEAD_BEEF_0000_1234,
        ]);
        for bits in maps {
            for from in 0..SLOTS {
                assert_eq!(
                    next_occupied(bits, from),
                    naive(bits, from),
                    "{bits:#x} from {from}"
                );
            }
        }
    }

    #[test]
    fn fires_on_time_not_early() {
        let mut w = Wheel::new(1000);
        let k = w.insert(1100, "a");
        w.insert(1000 + 64 * 64 * 3 + 17, "b");
        let mut out = Vec::new();
        w.poll(1099, &mut out);
        assert!(out.is_empty());
        assert_eq!(w.next_deadline(), Some(1100));
        w.poll(1100, &mut out);
        assert_eq!(out, vec![(1100, "a")]);
        assert_eq!(w.cancel(k), None, "fired key is stale");
        out.clear();
        w.poll(1000 + 64 * 64 * 3 + 16, &mut out);
        assert!(out.is_empty());
        w.poll(1000 + 64 * 64 * 3 + 17, &mut out);
        assert_eq!(out, vec![(1000 + 64 * 64 * 3 + 17, "b")]);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn past_deadline_fires_next_poll_and_cancel_reset() {
        let mut w = Wheel::new(500);
        let k1 = w.insert(10, 1);
        let k2 = w.insert(600, 2);
        assert_eq!(w.next_deadline(), Some(500));
        assert!(w.reset(k2, 700));
        assert_eq!(w.cancel(k1), Some(1));
        assert!(!w.reset(k1, 900));
        let mut out = Vec::new();
        w.poll(699, &mut out);
        assert!(out.is_empty());
        w.poll(700, &mut out);
        assert_eq!(out, vec![(700, 2)]);
        // Slot reuse: the stale key must not touch the new entry.
        let k3 = w.insert(800, 3);
        assert_eq!(k3.index, k2.index);
        assert_eq!(w.cancel(k2), None);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn far_deadlines_beyond_range() {
        let mut w = Wheel::new(7);
        w.insert(u64::MAX, 'z');
        w.insert(3 * WHEEL_RANGE + 12345, 'y');
        let mut out = Vec::new();
        w.poll(3 * WHEEL_RANGE + 12344, &mut out);
        assert!(out.is_empty());
        w.poll(3 * WHEEL_RANGE + 12345, &mut out);
        assert_eq!(out, vec![(3 * WHEEL_RANGE + 12345, 'y')]);
        w.poll(u64::MAX - 1, &mut out);
        assert_eq!(out.len(), 1);
        w.poll(u64::MAX, &mut out);
        assert_eq!(out.get(1), Some(&(u64::MAX, 'z')));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, bool),
        Cancel(usize),
        Reset(usize, u64),
        Advance(u64),
    }

    fn delta() -> impl Strategy<Value = u64> {
        prop_oneof![
            4 => 0u64..70,
            3 => 0u64..5000,
            2 => 0u64..300_000,
            1 => 0u64..(WHEEL_RANGE * 2),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (delta(), any::<bool>()).prop_map(|(d, past)| Op::Insert(d, past)),
            1 => any::<usize>().prop_map(Op::Cancel),
            2 => (any::<usize>(), delta()).prop_map(|(i, d)| Op::Reset(i, d)),
            3 => delta().prop_map(Op::Advance),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn differential_against_btreemap(start in 0u64..1_000_000, ops in proptest::collection::vec(op(), 1..200)) {
            let mut w = Wheel::new(start);
            let mut now = start;
            // model: id -> deadline, plus id -> key
            let mut model: BTreeMap<u32, u64> = BTreeMap::new();
            let mut keys: Vec<(u32, TimerKey)> = Vec::new();
            let mut next_id = 0u32;
            let mut out = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(d, past) => {
                        let deadline = if past { now.saturating_sub(d) } else { now.saturating_add(d) };
                        let k = w.insert(deadline, next_id);
                        model.insert(next_id, deadline);
                        keys.push((next_id, k));
                        next_id += 1;
                    }
                    Op::Cancel(i) if !keys.is_empty() => {
                        let (id, k) = keys[i % keys.len()];
                        prop_assert_eq!(w.cancel(k), model.remove(&id).map(|_| id));
                    }
                    Op::Reset(i, d) if !keys.is_empty() => {
                        let (id, k) = keys[i % keys.len()];
                        let live = model.contains_key(&id);
                        prop_assert_eq!(w.reset(k, now + d), live);
                        if live {
                            model.insert(id, now + d);
                        }
                    }
                    Op::Advance(d) => {
                        now += d;
                        out.clear();
                        w.poll(now, &mut out);
                        let mut fired: Vec<(u64, u32)> = out.clone();
                        fired.sort_by_key(|&(_, id)| id);
                        let expect: Vec<(u64, u32)> = model.iter().filter(|&(_, &dl)| dl <= now).map(|(&id, &dl)| (dl, id)).collect();
                        model.retain(|_, dl| *dl > now);
                        prop_assert_eq!(fired, expect);
                    }
                    _ => {}
                }
                prop_assert_eq!(w.len(), model.len());
                let earliest = model.values().min().copied();
                match (w.next_deadline(), earliest) {
                    (None, None) => {}
                    (Some(nd), Some(e)) => prop_assert!(nd <= e.max(now), "next {} earliest {}", nd, e),
                    (a, b) => prop_assert!(false, "next_deadline {:?} vs model {:?}", a, b),
                }
            }
        }
    }
}
