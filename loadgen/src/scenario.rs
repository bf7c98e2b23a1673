//! What to send and when: scenarios, the scenario mix, hold-time distribution, the
//! open-loop schedule and a tiny deterministic PRNG.
//!
//! Invariants:
//! - The schedule is open loop: call `i` has intended start `i * 1e6 / rate` µs after t0, no
//!   matter how late earlier calls were sent. Latencies are measured from that instant.
//! - Everything here is pure (no clock, no I/O); `now_us` comes in as an argument.

use std::fmt;
use std::str::FromStr;

/// One call flow the UAC drives; the UAS learns it from `X-Loadgen-Scenario`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// INVITE, 100, 180, 200, ACK, hold, BYE, 200.
    Basic,
    /// INVITE answered 486, ACKed.
    Reject,
    /// CANCEL after 180; 200 for CANCEL, 487 for INVITE, ACK.
    Cancel,
    /// 180s with several To-tags, then 200 from one of them.
    Fork,
    /// UAS never answers; a proxy must send 408 (success when it arrives).
    Noanswer,
    /// Like basic but the UAC never sends BYE.
    Nobye,
    /// Basic with a re-INVITE (200, ACK) before the BYE.
    Reinvite,
    /// Out-of-dialog OPTIONS answered 200.
    Options,
}

/// All scenarios, in index order.
pub const ALL: [Scenario; 8] = [
    Scenario::Basic,
    Scenario::Reject,
    Scenario::Cancel,
    Scenario::Fork,
    Scenario::Noanswer,
    Scenario::Nobye,
    Scenario::Reinvite,
    Scenario::Options,
];

impl Scenario {
    /// Lowercase name as used on the command line and in the header.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Basic => "basic",
            Scenario::Reject => "reject",
            Scenario::Cancel => "cancel",
            Scenario::Fork => "fork",
            Scenario::Noanswer => "noanswer",
            Scenario::Nobye => "nobye",
            Scenario::Reinvite => "reinvite",
            Scenario::Options => "options",
        }
    }
    /// Scenario from a header value; unknown or absent means basic (SIPp interop).
    pub fn from_header(v: &[u8]) -> Scenario {
        ALL.iter()
            .copied()
            .find(|s| v.eq_ignore_ascii_case(s.name().as_bytes()))
            .unwrap_or(Scenario::Basic)
    }
    /// Index into [`ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL.iter()
            .copied()
            .find(|x| x.name() == s)
            .ok_or_else(|| format!("unknown scenario {s:?}"))
    }
}

/// Weighted scenario mix, e.g. `basic=90,cancel=5,reject=5`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mix {
    /// (scenario, cumulative weight) in order.
    cumulative: Vec<(Scenario, u32)>,
    total: u32,
}

impl Mix {
    /// A mix of one scenario only.
    pub fn single(s: Scenario) -> Mix {
        Mix {
            cumulative: vec![(s, 1)],
            total: 1,
        }
    }
    /// Picks a scenario for a uniform random `r`.
    pub fn pick(&self, r: u64) -> Scenario {
        let x = (r % u64::from(self.total.max(1))) as u32;
        self.cumulative
            .iter()
            .find(|(_, c)| x < *c)
            .map_or(Scenario::Basic, |(s, _)| *s)
    }
}

impl FromStr for Mix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut cumulative = Vec::new();
        let mut total = 0u32;
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (name, w) = part.split_once('=').unwrap_or((part, "1"));
            let sc: Scenario = name.trim().parse()?;
            let w: u32 = w.trim().parse().map_err(|e| format!("weight {w:?}: {e}"))?;
            if w > 0 {
                total += w;
                cumulative.push((sc, total));
            }
        }
        if total == 0 {
            return Err("empty mix".into());
        }
        Ok(Mix { cumulative, total })
    }
}

/// xorshift64* PRNG: deterministic, fast, good enough for mixes and hold times.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (0 is remapped).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1) ^ 0x9e37_79b9_7f4a_7c15)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
}

/// Hold-time distribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HoldDist {
    /// Every call holds exactly `--hold`.
    Fixed,
    /// Exponential with mean `--hold`.
    Exp,
}

impl HoldDist {
    /// Draws a hold time in µs with mean `mean_us`.
    pub fn draw(self, mean_us: u64, rng: &mut Rng) -> u64 {
        match self {
            HoldDist::Fixed => mean_us,
            HoldDist::Exp => (-(rng.unit().ln()) * mean_us as f64) as u64,
        }
    }
}

/// Open-loop call schedule: which calls are due at `now_us`.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// Calls per second (per this schedule).
    rate: f64,
    /// Start offset of call 0 in µs.
    t0_us: u64,
    /// Next call index.
    next: u64,
    /// Stop after this many calls.
    max_calls: u64,
    /// Or stop at this time (µs, exclusive).
    end_us: u64,
}

impl Schedule {
    /// A schedule of `rate` calls/s from `t0_us`, at most `max_calls`, none at or after `end_us`.
    pub fn new(rate: f64, t0_us: u64, max_calls: u64, end_us: u64) -> Schedule {
        Schedule {
            rate: rate.max(1e-9),
            t0_us,
            next: 0,
            max_calls,
            end_us,
        }
    }
    /// Intended start of call `i`.
    pub fn intended(&self, i: u64) -> u64 {
        self.t0_us + (i as f64 * 1e6 / self.rate) as u64
    }
    /// The intended start of the next call if it is due at `now_us`; advances the schedule.
    pub fn pop_due(&mut self, now_us: u64) -> Option<u64> {
        let t = self.next_start()?;
        if t > now_us {
            return None;
        }
        self.next += 1;
        Some(t)
    }
    /// Gives back the call last popped (e.g. when the call table is full): it stays due.
    pub fn unpop(&mut self) {
        self.next = self.next.saturating_sub(1);
    }
    /// Intended start of the next call, or `None` when the schedule is exhausted.
    pub fn next_start(&self) -> Option<u64> {
        if self.next >= self.max_calls {
            return None;
        }
        let t = self.intended(self.next);
        (t < self.end_us).then_some(t)
    }
    /// Number of calls popped so far.
    pub fn issued(&self) -> u64 {
        self.next
    }
    /// Offered rate.
    pub fn rate(&self) -> f64 {
        self.rate
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_open_loop() {
        let mut s = Schedule::new(1000.0, 100, 5, u64::MAX);
        assert_eq!(s.pop_due(99), None);
        assert_eq!(s.pop_due(100), Some(100));
        // A late caller still gets the original intended times, one after another.
        assert_eq!(s.pop_due(10_000), Some(1100));
        assert_eq!(s.pop_due(10_000), Some(2100));
        s.unpop();
        assert_eq!(s.pop_due(10_000), Some(2100));
        assert_eq!(s.pop_due(10_000), Some(3100));
        assert_eq!(s.pop_due(10_000), Some(4100));
        assert_eq!(s.pop_due(10_000), None);
        assert_eq!(s.issued(), 5);
        let s = Schedule::new(10.0, 0, u64::MAX, 250_000);
        assert_eq!(s.intended(2), 200_000);
        let mut s2 = s.clone();
        assert!(s2.pop_due(1_000_000).is_some());
        assert!(s2.pop_due(1_000_000).is_some());
        assert!(s2.pop_due(1_000_000).is_some());
        assert_eq!(s2.pop_due(1_000_000), None);
    }

    #[test]
    fn mix_parses_and_weights() {
        let m: Mix = "basic=90,cancel=5,reject=5".parse().expect("valid");
        let mut rng = Rng::new(7);
        let mut n = [0u32; 8];
        for _ in 0..10_000 {
            n[m.pick(rng.next_u64()).index()] += 1;
        }
        assert!((8700..9300).contains(&n[0]), "{n:?}");
        assert!((350..650).contains(&n[Scenario::Cancel.index()]), "{n:?}");
        assert!("bogus=1".parse::<Mix>().is_err());
        assert!("basic=0".parse::<Mix>().is_err());
    }

    #[test]
    fn exp_hold_has_right_mean() {
        let mut rng = Rng::new(3);
        let n = 20_000;
        let sum: u64 = (0..n).map(|_| HoldDist::Exp.draw(1000, &mut rng)).sum();
        let mean = sum / n;
        assert!((950..1050).contains(&mean), "{mean}");
        assert_eq!(HoldDist::Fixed.draw(1000, &mut rng), 1000);
    }
}
