//! A strict Prometheus text (0.0.4) parser used to validate `/metrics`.

use std::collections::BTreeMap;

/// Strict Prometheus text (0.0.4) check: HELP/TYPE before samples, valid names, labels and
/// values; histogram buckets cumulative with `+Inf` equal to `_count`. Returns samples.
pub fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            assert!(name_ok(rest.split(' ').next().unwrap()), "{line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (n, t) = rest.split_once(' ').unwrap();
            assert!(
                name_ok(n) && ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                "{line}"
            );
            assert!(
                types.insert(n.to_owned(), t.to_owned()).is_none(),
                "duplicate TYPE {n}"
            );
        } else {
            assert!(
                !line.starts_with('#') && !line.is_empty(),
                "stray line {line:?}"
            );
            let (series, value) = line.rsplit_once(' ').unwrap();
            let v: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
            };
            let name = series.split('{').next().unwrap();
            assert!(name_ok(name), "{line}");
            if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
                let inner = labels
                    .strip_prefix('{')
                    .and_then(|l| l.strip_suffix('}'))
                    .expect(line);
                // k="v" pairs, values with \" \\ \n escapes only.
                let mut rest = inner;
                while !rest.is_empty() {
                    let (k, after) = rest.split_once("=\"").expect(line);
                    assert!(name_ok(k), "label {k} in {line}");
                    let mut end = None;
                    let mut chars = after.char_indices();
                    while let Some((i, c)) = chars.next() {
                        match c {
                            '\\' => assert!(
                                matches!(chars.next(), Some((_, '"' | '\\' | 'n'))),
                                "{line}"
                            ),
                            '"' => {
                                end = Some(i);
                                break;
                            }
                            '\n' => panic!("raw newline"),
                            _ => {}
                        }
                    }
                    let end = end.expect(line);
                    rest = &after[end + 1..];
                    rest = rest.strip_prefix(',').unwrap_or(rest);
                }
            }
            let family = ["_bucket", "_sum", "_count"].iter().fold(name, |n, s| {
                n.strip_suffix(s)
                    .filter(|b| types.get(*b).is_some_and(|t| t == "histogram"))
                    .unwrap_or(n)
            });
            let family = if types.contains_key(family) {
                family
            } else {
                name.strip_suffix("_total").unwrap_or(name)
            };
            assert!(types.contains_key(family), "sample before TYPE: {line}");
            assert!(
                samples.insert(series.to_owned(), v).is_none(),
                "duplicate series {series}"
            );
        }
    }
    for (fam, t) in &types {
        if t != "histogram" {
            continue;
        }
        let mut prev = 0.0;
        let buckets: Vec<_> = samples
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{fam}_bucket{{")))
            .collect();
        assert!(!buckets.is_empty(), "{fam} has no buckets");
        let mut sorted: Vec<(f64, f64)> = buckets
            .iter()
            .map(|(k, v)| {
                let le = k.split("le=\"").nth(1).unwrap().trim_end_matches("\"}");
                (
                    if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap()
                    },
                    **v,
                )
            })
            .collect();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (_, v) in &sorted {
            assert!(*v >= prev, "{fam} buckets not cumulative");
            prev = *v;
        }
        assert_eq!(
            Some(&prev),
            samples.get(&format!("{fam}_count")),
            "{fam} +Inf != _count"
        );
    }
    samples
}
