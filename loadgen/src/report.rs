//! Turns a finished run into the summary table, `.hgrm` percentile files, a JSON summary and
//! an SVG latency-by-percentile plot.
//!
//! Invariants:
//! - All latency figures are µs, measured from intended send times (see `stats`).
//! - The `.hgrm` output follows HdrHistogram's `outputPercentileDistribution` text format
//!   (Value, Percentile, TotalCount, 1/(1-Percentile), footer with mean/stddev/max/count), so
//!   existing HdrHistogram plotters read it.
//! - Nothing here runs on the packet path; allocation is fine.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::io::RunResult;
use crate::stats::{FAIL_REASONS, METRICS, Metric};

/// Percentiles shown in the table and JSON.
pub const QUANTILES: [(f64, &str); 5] = [
    (0.5, "p50"),
    (0.9, "p90"),
    (0.99, "p99"),
    (0.999, "p99.9"),
    (0.9999, "p99.99"),
];

/// Percentile summary of one metric.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MetricSummary {
    /// Samples.
    pub count: u64,
    /// Mean, µs.
    pub mean_us: f64,
    /// Percentiles by label (`p50` ..), µs.
    pub percentiles_us: BTreeMap<&'static str, u64>,
    /// Maximum, µs.
    pub max_us: u64,
}

/// Machine-readable summary of a run (`--json`).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Latency metrics by name.
    pub latency: BTreeMap<&'static str, MetricSummary>,
    /// Calls started.
    pub started: u64,
    /// Calls completed as expected.
    pub ok: u64,
    /// Failures by reason (UAC and UAS).
    pub failed: BTreeMap<&'static str, u64>,
    /// Total failures.
    pub failed_total: u64,
    /// UAC retransmissions.
    pub retrans: u64,
    /// UAS retransmissions.
    pub uas_retrans: u64,
    /// Datagrams sent (UAC+UAS).
    pub sent: u64,
    /// Datagrams received (UAC+UAS).
    pub received: u64,
    /// Datagrams that matched nothing.
    pub stray: u64,
    /// Calls started >10 ms behind schedule.
    pub behind_schedule: u64,
    /// Worst lateness of a call start, µs.
    pub max_behind_us: u64,
    /// Calls the UAS accepted.
    pub uas_calls: u64,
    /// Offered rate, calls/s.
    pub offered_cps: f64,
    /// Completed calls per second of wall time.
    pub achieved_cps: f64,
    /// Wall time, s.
    pub elapsed_s: f64,
    /// Process CPU (user+sys), s.
    pub cpu_s: f64,
    /// CPU µs per call (per completed UAC call, else per UAS call).
    pub cpu_us_per_call: f64,
}

/// Summarises one histogram.
pub fn summarize(h: &Histogram<u64>) -> MetricSummary {
    MetricSummary {
        count: h.len(),
        mean_us: if h.is_empty() { 0.0 } else { h.mean() },
        percentiles_us: QUANTILES
            .iter()
            .map(|(q, l)| {
                (
                    *l,
                    if h.is_empty() {
                        0
                    } else {
                        h.value_at_quantile(*q)
                    },
                )
            })
            .collect(),
        max_us: if h.is_empty() { 0 } else { h.max() },
    }
}

/// Builds the summary of a run.
pub fn summary(r: &RunResult) -> Summary {
    let (u, s) = (&r.uac.c, &r.uas.c);
    let calls = if u.ok + u.failed_total() > 0 {
        u.ok + u.failed_total()
    } else {
        s.uas_calls
    };
    Summary {
        latency: METRICS
            .iter()
            .map(|m| (m.name(), summarize(r.uac.hist(*m))))
            .collect(),
        started: u.started,
        ok: u.ok,
        failed: FAIL_REASONS
            .iter()
            .map(|f| {
                let i = *f as usize;
                (
                    f.name(),
                    u.failed.get(i).unwrap_or(&0) + s.failed.get(i).unwrap_or(&0),
                )
            })
            .collect(),
        failed_total: u.failed_total() + s.failed_total(),
        retrans: u.retrans,
        uas_retrans: s.uas_retrans,
        sent: u.sent + s.sent,
        received: u.recv + s.recv,
        stray: u.stray + s.stray,
        behind_schedule: u.behind,
        max_behind_us: r.uac.max_behind_us,
        uas_calls: s.uas_calls,
        offered_cps: r.offered_cps,
        achieved_cps: if r.elapsed_s > 0.0 {
            u.ok as f64 / r.elapsed_s
        } else {
            0.0
        },
        elapsed_s: r.elapsed_s,
        cpu_s: r.cpu_s,
        cpu_us_per_call: if calls > 0 {
            r.cpu_s * 1e6 / calls as f64
        } else {
            0.0
        },
    }
}

/// The human-readable final table.
pub fn table(s: &Summary) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}   (latency in us, from intended send time)",
        "metric", "count", "p50", "p90", "p99", "p99.9", "p99.99", "max"
    );
    for m in METRICS {
        if let Some(ms) = s.latency.get(m.name()) {
            let p = |l: &str| ms.percentiles_us.get(l).copied().unwrap_or(0);
            let _ = writeln!(
                t,
                "{:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                m.name(),
                ms.count,
                p("p50"),
                p("p90"),
                p("p99"),
                p("p99.9"),
                p("p99.99"),
                ms.max_us
            );
        }
    }
    let _ = writeln!(
        t,
        "calls: started {} ok {} failed {}{}",
        s.started,
        s.ok,
        s.failed_total,
        s.failed
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!(" {k}={v}"))
            .collect::<String>()
    );
    let _ = writeln!(
        t,
        "uas: calls {}  retransmissions: uac {} uas {}  messages: sent {} received {} stray {}",
        s.uas_calls, s.retrans, s.uas_retrans, s.sent, s.received, s.stray
    );
    let _ = writeln!(
        t,
        "rate: offered {:.0} cps achieved {:.0} cps over {:.2} s; behind schedule >10ms: {} (worst {} us)",
        s.offered_cps, s.achieved_cps, s.elapsed_s, s.behind_schedule, s.max_behind_us
    );
    let _ = writeln!(
        t,
        "cpu: {:.3} s (user+sys, getrusage) = {:.1} us per call",
        s.cpu_s, s.cpu_us_per_call
    );
    if s.behind_schedule > 0 {
        let _ = writeln!(
            t,
            "WARNING: the generator fell behind its schedule ({} calls >10 ms late, worst {} ms); \
             latencies include that lag, the offered rate was not sustained by this host",
            s.behind_schedule,
            s.max_behind_us / 1000
        );
    }
    t
}

/// HdrHistogram percentile-distribution text of one histogram (values in µs).
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    t,
                    "{:>12.3} {:>2.12} {:>10} {:>14.2}",
                    v.value_iterated_to() as f64,
                    q,
                    total,
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(
                    t,
                    "{:>12.3} {:>2.12} {:>10}",
                    v.value_iterated_to() as f64,
                    q,
                    total
                );
            }
        }
    }
    let (mean, sd, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean(), h.stdev(), h.max() as f64)
    };
    let _ = writeln!(t, "#[Mean    = {mean:>12.3}, StdDeviation   = {sd:>12.3}]");
    let _ = writeln!(
        t,
        "#[Max     = {max:>12.3}, Total count    = {:>12}]",
        h.len()
    );
    let _ = writeln!(
        t,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        (2 * 10u64.pow(u32::from(h.sigfig()))).next_power_of_two()
    );
    t
}

/// Writes `PREFIX.<metric>.hgrm` for every metric with samples; returns the paths written.
pub fn write_hgrm(prefix: &str, r: &RunResult) -> std::io::Result<Vec<String>> {
    let mut paths = Vec::new();
    for m in METRICS {
        let h = r.uac.hist(m);
        if h.is_empty() {
            continue;
        }
        let p = format!("{prefix}.{}.hgrm", m.name());
        std::fs::write(&p, hgrm(h))?;
        paths.push(p);
    }
    Ok(paths)
}

/// Writes the JSON summary.
pub fn write_json(path: &Path, s: &Summary) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(s).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}

/// Writes an SVG of latency by percentile, x axis log-scaled as 1/(1-p), one line per metric.
pub fn write_plot(path: &Path, r: &RunResult) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let series: Vec<(Metric, Vec<(f64, f64)>)> = METRICS
        .iter()
        .filter(|m| !r.uac.hist(**m).is_empty())
        .map(|m| {
            let h = r.uac.hist(*m);
            let pts = h
                .iter_quantiles(5)
                .map(|v| v.quantile_iterated_to())
                .filter(|q| *q < 1.0)
                .map(|q| (1.0 / (1.0 - q), h.value_at_quantile(q) as f64))
                .collect();
            (*m, pts)
        })
        .collect();
    let xmax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
        .fold(10.0f64, f64::max);
    let ymax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(1.0f64, f64::max);
    let root = SVGBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Latency by percentile (us, from intended send time)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1.0f64..xmax * 1.2).log_scale(), 0.0f64..ymax * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("percentile (1/(1-p)): 10 = p90, 100 = p99, 1000 = p99.9")
        .y_desc("latency (us)")
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 1.0 / x);
            format!("{p:.3}%")
        })
        .draw()?;
    for (i, (m, pts)) in series.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(m.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn hgrm_has_standard_columns_and_footer() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 1_000_000, 3).expect("bounds");
        for v in 1..=1000u64 {
            h.record(v).expect("in range");
        }
        let t = hgrm(&h);
        assert!(t.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
        assert!(t.contains("#[Max     =     1000.000, Total count    =         1000]"));
        let last_row = t
            .lines()
            .rfind(|l| !l.starts_with('#') && !l.trim().is_empty());
        let cols: Vec<&str> = last_row.expect("rows").split_whitespace().collect();
        assert_eq!(cols[2], "1000", "total count reaches all samples: {t}");
        let s = summarize(&h);
        assert_eq!(s.percentiles_us["p50"], 500);
        assert_eq!(s.max_us, 1000);
    }

    #[test]
    fn plot_and_json_are_written() {
        let mut r = RunResult::default();
        for v in 1..=10_000u64 {
            r.uac.record(Metric::Setup, v);
            r.uac.record(Metric::Bye200, v / 2);
        }
        r.uac.c.ok = 10_000;
        r.elapsed_s = 1.0;
        r.cpu_s = 0.5;
        let dir = std::env::temp_dir().join(format!("loadgen-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let svg = dir.join("p.svg");
        write_plot(&svg, &r).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.starts_with("<svg"));
        for label in ["setup", "bye_200", "99.990%", "latency (us)"] {
            assert!(text.contains(label), "missing {label}");
        }
        assert!(
            !text.contains("invite_100"),
            "empty metrics are not plotted"
        );
        let s = summary(&r);
        assert_eq!(s.cpu_us_per_call, 50.0);
        assert_eq!(s.achieved_cps, 10_000.0);
        let json = dir.join("s.json");
        write_json(&json, &s).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(v["latency"]["setup"]["count"], 10_000);
        assert_eq!(v["ok"], 10_000);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
