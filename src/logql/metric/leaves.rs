//! A metric expression split for a cluster: its leaves (the range
//! functions, and `sum by` over an additive one) are computed on every
//! node where the streams are; the nodes' answers combine into exactly
//! what one store holding every stream would give; the vector operations
//! above the leaves then run once, on the node that answers.
//!
//! Why the combination is exact: a stream lives on one node, so a range
//! function over it is computed whole there. Where one series gathers
//! samples of several streams (a `by`/`without` on the range function, or
//! `drop`, `keep` and `label_format` making label sets equal), the series
//! may have samples on several nodes: sums add, maxima and minima fold,
//! absences intersect; every other function (`avg_over_time`,
//! `quantile_over_time`, `stddev_over_time`, `first_over_time`,
//! `rate_counter`, …) is computed from the samples themselves, which those
//! nodes send.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::range::{self, Samples, mergeable};
use super::{Budget, EvalError, Series, Steps, Value, evaluate_with};
use crate::log_database::Database;
use crate::log_database::labels::Labels;
use crate::logql::ast::{AggregateOp, Grouping, MetricExpr, RangeExpr, RangeFunc, Stage};

/// One leaf of a metric expression.
#[derive(Clone, Copy, Debug)]
pub enum Leaf<'a> {
    /// `sum by (…)` of an additive range function: every node sums its
    /// own streams, and the sums add.
    Sum {
        /// The `sum`'s grouping.
        grouping: Option<&'a Grouping>,
        /// The range function.
        range: &'a RangeExpr,
    },
    /// A range function's series.
    Range(&'a RangeExpr),
}

impl<'a> Leaf<'a> {
    /// The leaf an aggregation is, when it is one: `sum` straight over an
    /// additive, ungrouped range function.
    pub(super) fn sum(
        op: AggregateOp,
        grouping: Option<&'a Grouping>,
        inner: &'a MetricExpr,
    ) -> Option<Self> {
        match inner {
            MetricExpr::Range(range)
                if op == AggregateOp::Sum
                    && range.grouping.is_none()
                    && range::additive(range.func) =>
            {
                Some(Self::Sum { grouping, range })
            }
            _ => None,
        }
    }

    fn range(&self) -> &'a RangeExpr {
        match self {
            Self::Sum { range, .. } | Self::Range(range) => range,
        }
    }

    /// Whether the nodes must send this leaf's samples rather than its
    /// series: a function that does not merge, over series that may hold
    /// streams of several nodes.
    pub fn needs_samples(&self) -> bool {
        let Self::Range(range) = self else {
            return false;
        };
        !mergeable(range.func)
            && (range.grouping.is_some()
                || range
                    .log
                    .stages
                    .iter()
                    .any(|s| matches!(s, Stage::Drop(_) | Stage::Keep(_) | Stage::LabelFormat(_))))
    }

    /// The stream selector the leaf reads.
    pub fn selector(&self) -> &'a [crate::log_database::query::Matcher] {
        &self.range().log.selector
    }
}

/// The leaves of `expr`, in the order [`evaluate_with`] asks for them.
pub fn leaves(expr: &MetricExpr) -> Vec<Leaf<'_>> {
    fn walk<'a>(expr: &'a MetricExpr, out: &mut Vec<Leaf<'a>>) {
        match expr {
            MetricExpr::Number(_) | MetricExpr::Vector(_) => {}
            MetricExpr::Range(range) => out.push(Leaf::Range(range)),
            MetricExpr::Aggregate {
                op,
                grouping,
                inner,
                ..
            } => match Leaf::sum(*op, grouping.as_ref(), inner) {
                Some(leaf) => out.push(leaf),
                None => walk(inner, out),
            },
            MetricExpr::LabelReplace { inner, .. } => walk(inner, out),
            MetricExpr::Binary { lhs, rhs, .. } => {
                walk(lhs, out);
                walk(rhs, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(expr, &mut out);
    out
}

/// One node's answer for one leaf.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Part {
    /// The leaf's series as this node computed them.
    Series(Vec<Series>),
    /// Every sample of each series in the steps' windows.
    Samples(Vec<(Labels, Samples)>),
}

/// This node's part of `leaf`: its samples when the leaf needs them or
/// `samples` asks for them (a series turned out to span nodes), else its
/// series.
pub fn part(
    leaf: &Leaf,
    db: &Database,
    steps: &Steps,
    budget: &Budget,
    samples: bool,
) -> Result<Part, EvalError> {
    Ok(match leaf {
        Leaf::Sum { grouping, range } => Part::Series(range::evaluate(
            range,
            Some(&pushed(*grouping)),
            db,
            steps,
            budget,
        )?),
        Leaf::Range(range) if leaf.needs_samples() || (samples && !mergeable(range.func)) => {
            Part::Samples(range::samples(range, db, steps, budget)?)
        }
        Leaf::Range(range) => Part::Series(range::evaluate(range, None, db, steps, budget)?),
    })
}

/// Whether the nodes' series of `leaf` cannot be combined as they are: a
/// function that does not fold, and a series that more than one node
/// answered (streams with the same labels on several nodes, as the
/// directory collector gives for `/var/log/syslog` on every host). Such a
/// leaf is asked again for its samples.
pub fn spans_nodes(leaf: &Leaf, parts: &[Part]) -> bool {
    let Leaf::Range(range) = leaf else {
        return false;
    };
    if mergeable(range.func) {
        return false;
    }
    let mut seen = std::collections::HashSet::new();
    parts.iter().any(|part| match part {
        Part::Series(series) => series.iter().any(|s| !seen.insert(&s.labels)),
        Part::Samples(_) => false,
    })
}

/// A `sum`'s grouping as the range function applies it while counting
/// (no clause: one group).
fn pushed(grouping: Option<&Grouping>) -> Grouping {
    grouping.cloned().unwrap_or(Grouping {
        without: false,
        labels: Vec::new(),
    })
}

/// Combines the parts every node answered for `leaf` into its series.
pub fn combine(
    leaf: &Leaf,
    parts: Vec<Part>,
    steps: &Steps,
    budget: &Budget,
) -> Result<Vec<Series>, EvalError> {
    let range = leaf.range();
    if parts.iter().any(|p| matches!(p, Part::Samples(_))) {
        let mut groups: BTreeMap<Labels, Samples> = BTreeMap::new();
        for part in parts {
            let Part::Samples(series) = part else {
                return Err(EvalError::Invalid(
                    "a node answered series where samples were needed".into(),
                ));
            };
            for (labels, samples) in series {
                groups.entry(labels).or_default().extend(samples);
            }
        }
        check_series(groups.len(), budget)?;
        let groups = groups
            .into_iter()
            .map(|(labels, mut samples)| {
                // Stable: a node's own order stays for equal times.
                samples.sort_by_key(|(ts, _)| *ts);
                (labels, samples)
            })
            .collect();
        return Ok(range::from_samples(range, groups, steps));
    }
    let nodes = parts.len();
    let mut merged: BTreeMap<Labels, (usize, BTreeMap<u32, f64>)> = BTreeMap::new();
    for part in parts {
        let Part::Series(series) = part else {
            return Err(EvalError::Invalid(
                "a node answered samples where series were needed".into(),
            ));
        };
        for s in series {
            match merged.get_mut(&s.labels) {
                None => {
                    merged.insert(s.labels, (1, s.points));
                }
                Some((seen, points)) => {
                    *seen += 1;
                    fold(range.func, points, s.points);
                }
            }
        }
    }
    if range.func == RangeFunc::AbsentOverTime {
        // Absent from the cluster only where absent from every node.
        merged.retain(|_, (seen, _)| *seen == nodes);
    }
    check_series(merged.len(), budget)?;
    Ok(merged
        .into_iter()
        .map(|(labels, (_, points))| Series { labels, points })
        .filter(|s| !s.points.is_empty())
        .collect())
}

fn check_series(count: usize, budget: &Budget) -> Result<(), EvalError> {
    if count > budget.max_series {
        return Err(EvalError::TooManySeries(budget.max_series));
    }
    Ok(())
}

/// Folds another node's points of the same series into `points`.
fn fold(func: RangeFunc, points: &mut BTreeMap<u32, f64>, other: BTreeMap<u32, f64>) {
    if func == RangeFunc::AbsentOverTime {
        points.retain(|k, _| other.contains_key(k));
        return;
    }
    for (k, v) in other {
        points
            .entry(k)
            .and_modify(|mine| {
                *mine = match func {
                    RangeFunc::MaxOverTime if v > *mine || mine.is_nan() => v,
                    RangeFunc::MinOverTime if v < *mine || mine.is_nan() => v,
                    RangeFunc::MaxOverTime | RangeFunc::MinOverTime => *mine,
                    // Additive: a series split over nodes adds up. (A
                    // function that does not fold never meets itself
                    // here: such series are sent as samples, see
                    // `spans_nodes`.)
                    _ => *mine + v,
                }
            })
            .or_insert(v);
    }
}

/// Evaluates `expr` with every leaf's parts from `parts` (one list per
/// leaf, in [`leaves`] order, each with every node's part).
pub fn evaluate_parts(
    expr: &MetricExpr,
    parts: Vec<Vec<Part>>,
    steps: &Steps,
    budget: &Budget,
) -> Result<Value, EvalError> {
    let leaves = leaves(expr);
    if leaves.len() != parts.len() {
        return Err(EvalError::Invalid(format!(
            "the query has {} range functions but {} answers came",
            leaves.len(),
            parts.len()
        )));
    }
    let mut combined = leaves
        .iter()
        .zip(parts)
        .map(|(leaf, parts)| combine(leaf, parts, steps, budget))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter();
    evaluate_with(expr, steps, &mut |_| {
        combined
            .next()
            .ok_or_else(|| EvalError::Invalid("a range function had no answer".into()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logql::{Expr, parse};

    fn metric(text: &str) -> MetricExpr {
        match parse(text).unwrap() {
            Expr::Metric(m) => m,
            Expr::Log(_) => panic!("{text} is a log query"),
        }
    }

    #[test]
    fn leaves_are_range_functions_and_sums_over_additive_ones() {
        let expr = metric(
            r#"sum by (a) (rate({x="1"}[1m])) / on() group_left count(max_over_time({x="2"} | unwrap v [1m]))
               + quantile_over_time(0.5, {x="3"} | unwrap v [1m]) by (b)"#,
        );
        let leaves = leaves(&expr);
        assert_eq!(leaves.len(), 3);
        assert!(matches!(leaves[0], Leaf::Sum { .. }));
        assert!(matches!(leaves[1], Leaf::Range(_)) && !leaves[1].needs_samples());
        assert!(leaves[2].needs_samples());
        assert!(!leaves_of("avg_over_time({x=\"1\"} | unwrap v [1m])")[0].needs_samples());
        assert!(
            leaves_of("avg_over_time({x=\"1\"} | drop pod | unwrap v [1m])")[0].needs_samples()
        );
        assert!(!leaves_of("max_over_time({x=\"1\"} | unwrap v [1m]) by (a)")[0].needs_samples());
    }

    fn leaves_of(text: &str) -> Vec<Leaf<'static>> {
        let expr: &'static MetricExpr = Box::leak(Box::new(metric(text)));
        leaves(expr)
    }

    fn series(labels: &[(&str, &str)], points: &[(u32, f64)]) -> Series {
        Series {
            labels: Labels::new(labels.iter().copied()),
            points: points.iter().copied().collect(),
        }
    }

    fn budget() -> Budget {
        Budget {
            deadline: std::time::Instant::now() + std::time::Duration::from_secs(60),
            cancelled: Default::default(),
            max_series: 10,
            memory: Default::default(),
        }
    }

    const STEPS: Steps = Steps {
        start: 60_000_000_000,
        step: 60_000_000_000,
        count: 3,
    };

    #[test]
    fn series_on_several_nodes_fold_by_their_function() {
        let combine_one = |text: &str, parts: Vec<Part>| {
            let expr = metric(text);
            combine(&leaves(&expr)[0], parts, &STEPS, &budget()).unwrap()
        };
        let a = || series(&[("a", "1")], &[(0, 1.0), (1, 5.0)]);
        let b = || series(&[("a", "1")], &[(1, 2.0), (2, 3.0)]);
        let parts = || vec![Part::Series(vec![a()]), Part::Series(vec![b()])];
        assert_eq!(
            combine_one("count_over_time({x=\"1\"} | drop b [1m])", parts()),
            vec![series(&[("a", "1")], &[(0, 1.0), (1, 7.0), (2, 3.0)])]
        );
        assert_eq!(
            combine_one("max_over_time({x=\"1\"} | unwrap v [1m]) by (a)", parts()),
            vec![series(&[("a", "1")], &[(0, 1.0), (1, 5.0), (2, 3.0)])]
        );
        assert_eq!(
            combine_one("min_over_time({x=\"1\"} | unwrap v [1m]) by (a)", parts()),
            vec![series(&[("a", "1")], &[(0, 1.0), (1, 2.0), (2, 3.0)])]
        );
        // Absent only where no node has anything; a node with no series
        // had something at every step.
        assert_eq!(
            combine_one("absent_over_time({a=\"1\"}[1m])", parts()),
            vec![series(&[("a", "1")], &[(1, 5.0)])]
        );
        let mut with_full = parts();
        with_full.push(Part::Series(Vec::new()));
        assert!(combine_one("absent_over_time({a=\"1\"}[1m])", with_full).is_empty());
    }

    #[test]
    fn samples_from_several_nodes_are_one_window() {
        let expr = metric("quantile_over_time(0.5, {x=\"1\"} | unwrap v [2m]) by (a)");
        let leaf = leaves(&expr)[0];
        let s = 1_000_000_000;
        let g = Labels::new([("a", "1")]);
        let parts = vec![
            Part::Samples(vec![(g.clone(), vec![(30 * s, 1.0), (90 * s, 3.0)])]),
            Part::Samples(vec![(g.clone(), vec![(50 * s, 2.0), (150 * s, 10.0)])]),
        ];
        let out = combine(&leaf, parts, &STEPS, &budget()).unwrap();
        // Step 60 s: {1, 2}; 120 s: {1, 2, 3}; 180 s: {3, 10}.
        assert_eq!(
            out,
            vec![series(&[("a", "1")], &[(0, 1.5), (1, 2.0), (2, 6.5)])]
        );
    }

    #[test]
    fn a_series_on_two_nodes_of_a_function_that_does_not_fold_is_asked_again() {
        let expr = metric("avg_over_time({x=\"1\"} | unwrap v [1m])");
        let leaf = leaves(&expr)[0];
        let same = || Part::Series(vec![series(&[("path", "/var/log/syslog")], &[(0, 1.0)])]);
        let other = Part::Series(vec![series(&[("path", "/var/log/other")], &[(0, 1.0)])]);
        assert!(spans_nodes(&leaf, &[same(), same()]));
        assert!(!spans_nodes(&leaf, &[same(), other]));
        let sum = metric("count_over_time({x=\"1\"}[1m])");
        assert!(!spans_nodes(&leaves(&sum)[0], &[same(), same()]));
    }

    #[test]
    fn too_many_series_across_nodes_is_refused() {
        let expr = metric("count_over_time({x=\"1\"}[1m])");
        let parts = (0..11)
            .map(|i| Part::Series(vec![series(&[("n", &i.to_string())], &[(0, 1.0)])]))
            .collect();
        assert!(matches!(
            combine(&leaves(&expr)[0], parts, &STEPS, &budget()),
            Err(EvalError::TooManySeries(10))
        ));
    }
}
