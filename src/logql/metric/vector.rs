//! Vector aggregations (`sum`, `avg`, `topk`, `sort`, …) and
//! `label_replace`, step by step over whole series.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use regex::Regex;

use super::Series;
use super::range::{group, variance};
use crate::log_database::labels::Labels;
use crate::logql::ast::{AggregateOp, Grouping};

/// The group of a series: `by` keeps the listed labels, `without` drops
/// them, no clause means one group.
fn key(labels: &Labels, grouping: Option<&Grouping>) -> Labels {
    match grouping {
        None => Labels::default(),
        some => group(labels, some),
    }
}

/// Aggregates `series` per step.
pub(super) fn aggregate(
    op: AggregateOp,
    grouping: Option<&Grouping>,
    param: Option<f64>,
    series: Vec<Series>,
) -> Vec<Series> {
    match op {
        AggregateOp::Topk | AggregateOp::Bottomk => select(
            op == AggregateOp::Topk,
            param.unwrap_or(1.0) as usize,
            grouping,
            series,
        ),
        AggregateOp::Sort | AggregateOp::SortDesc => sort(op == AggregateOp::SortDesc, series),
        _ => combine(op, grouping, series),
    }
}

/// `sort` / `sort_desc`: the series by their value (an instant query's
/// only step; a range query shows series by labels anyway).
fn sort(descending: bool, mut series: Vec<Series>) -> Vec<Series> {
    let first = |s: &Series| s.points.values().next().copied().unwrap_or(f64::NAN);
    series.sort_by(|a, b| {
        let (x, y) = (first(a), first(b));
        // NaN last, as Prometheus sorts.
        let order = match (x.is_nan(), y.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => return std::cmp::Ordering::Greater,
            (false, true) => return std::cmp::Ordering::Less,
            _ => x.total_cmp(&y),
        };
        if descending { order.reverse() } else { order }
    });
    series
}

/// `topk` / `bottomk`: per step and group, the k largest (smallest)
/// samples with their own labels; an instant query lists them in that
/// order.
fn select(
    largest: bool,
    k: usize,
    grouping: Option<&Grouping>,
    series: Vec<Series>,
) -> Vec<Series> {
    let keys: Vec<Labels> = series.iter().map(|s| key(&s.labels, grouping)).collect();
    let mut out: Vec<Series> = series
        .iter()
        .map(|s| Series {
            labels: s.labels.clone(),
            points: BTreeMap::new(),
        })
        .collect();
    let all_steps: BTreeSet<u32> = series
        .iter()
        .flat_map(|s| s.points.keys().copied())
        .collect();
    for step in all_steps {
        let mut by_group: HashMap<&Labels, Vec<(f64, usize)>> = HashMap::new();
        for (i, s) in series.iter().enumerate() {
            if let Some(v) = s.points.get(&step) {
                by_group.entry(&keys[i]).or_default().push((*v, i));
            }
        }
        for (_, mut members) in by_group {
            members.sort_by(|a, b| {
                let order = if largest {
                    b.0.total_cmp(&a.0)
                } else {
                    a.0.total_cmp(&b.0)
                };
                order.then(a.1.cmp(&b.1))
            });
            for (v, i) in members.into_iter().take(k) {
                out[i].points.insert(step, v);
            }
        }
    }
    let mut kept: Vec<Series> = out.into_iter().filter(|s| !s.points.is_empty()).collect();
    let value = |s: &Series| s.points.values().next().copied().unwrap_or(0.0);
    kept.sort_by(|a, b| {
        let order = if largest {
            value(b).total_cmp(&value(a))
        } else {
            value(a).total_cmp(&value(b))
        };
        order.then_with(|| a.labels.cmp(&b.labels))
    });
    kept
}

/// The aggregations that fold a group into one value per step.
fn combine(op: AggregateOp, grouping: Option<&Grouping>, series: Vec<Series>) -> Vec<Series> {
    let mut groups: BTreeMap<Labels, BTreeMap<u32, Vec<f64>>> = BTreeMap::new();
    for s in series {
        let group = groups.entry(key(&s.labels, grouping)).or_default();
        for (k, v) in s.points {
            group.entry(k).or_default().push(v);
        }
    }
    groups
        .into_iter()
        .map(|(labels, points)| Series {
            labels,
            points: points
                .into_iter()
                .map(|(k, values)| {
                    let n = values.len() as f64;
                    let v = match op {
                        AggregateOp::Sum => values.iter().sum(),
                        AggregateOp::Count => n,
                        AggregateOp::Min => values
                            .iter()
                            .copied()
                            .fold(f64::NAN, |a, b| if a.is_nan() || b < a { b } else { a }),
                        AggregateOp::Max => values
                            .iter()
                            .copied()
                            .fold(f64::NAN, |a, b| if a.is_nan() || b > a { b } else { a }),
                        AggregateOp::Avg => values.iter().sum::<f64>() / n,
                        AggregateOp::Stdvar => variance(&values),
                        AggregateOp::Stddev => variance(&values).sqrt(),
                        _ => unreachable!("handled by the caller"),
                    };
                    (k, v)
                })
                .collect(),
        })
        .collect()
}

/// `label_replace`: where `src` matches `regex` (anchored), `dst` becomes
/// `replacement` with `$1`-style references expanded; an empty result
/// removes `dst`.
pub(super) fn label_replace(
    series: Vec<Series>,
    dst: &str,
    replacement: &str,
    src: &str,
    regex: &Regex,
) -> Vec<Series> {
    series
        .into_iter()
        .map(|s| {
            let value = s.labels.get(src).unwrap_or("").to_owned();
            let Some(captures) = regex.captures(&value) else {
                return s;
            };
            let mut expanded = String::new();
            captures.expand(replacement, &mut expanded);
            let pairs = s
                .labels
                .iter()
                .filter(|(n, _)| *n != dst)
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .chain((!expanded.is_empty()).then(|| (dst.to_owned(), expanded)));
            Series {
                labels: Labels::new(pairs),
                points: s.points,
            }
        })
        .collect()
}
