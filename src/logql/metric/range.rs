//! Range aggregations: `count_over_time`, `rate`, the unwrapped functions
//! and `absent_over_time`, over the windows `(t - range, t]` of each step.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use super::{Budget, EvalError, Series, Steps};
use crate::log_database::Database;
use crate::log_database::labels::Labels;
use crate::log_database::query::MatchOp;
use crate::logql::ast::{Grouping, RangeExpr, RangeFunc};
use crate::logql::pipeline::ERROR;

/// The labels of a sample after a `by` / `without` grouping.
pub(super) fn group(labels: &Labels, grouping: Option<&Grouping>) -> Labels {
    match grouping {
        None => labels.clone(),
        Some(g) => labels.filtered(&g.labels, !g.without),
    }
}

pub(super) fn additive(func: RangeFunc) -> bool {
    matches!(
        func,
        RangeFunc::CountOverTime
            | RangeFunc::Rate
            | RangeFunc::BytesOverTime
            | RangeFunc::BytesRate
            | RangeFunc::SumOverTime
    )
}

/// One series' state.
enum Acc {
    /// Sums per step (additive functions).
    Cells(BTreeMap<u32, f64>),
    /// The window's samples, and the points computed so far.
    Window {
        samples: VecDeque<(i64, f64)>,
        next: u32,
        points: BTreeMap<u32, f64>,
    },
}

/// Whether nodes' answers for the same series combine into the answer one
/// store would give: sums add, maxima and minima fold, absences intersect.
/// The others need all of a series' samples in one place.
pub(super) fn mergeable(func: RangeFunc) -> bool {
    additive(func)
        || matches!(
            func,
            RangeFunc::MaxOverTime | RangeFunc::MinOverTime | RangeFunc::AbsentOverTime
        )
}

/// Most samples a node gathers for one query whose function needs every
/// sample of a group in one place (16 bytes each).
const MAX_GATHERED_SAMPLES: usize = 1_000_000;

/// The samples of one series, in time order, already shifted by the offset.
pub(crate) type Samples = Vec<(i64, f64)>;

/// Evaluates a range aggregation; `pushed` is a `sum by` grouping from
/// outside that may be applied while counting.
pub(super) fn evaluate(
    expr: &RangeExpr,
    pushed: Option<&Grouping>,
    db: &Database,
    steps: &Steps,
    budget: &Budget,
) -> Result<Vec<Series>, EvalError> {
    match run(expr, pushed, db, steps, budget, false)? {
        Run::Series(series) => Ok(series),
        Run::Samples(_) => unreachable!("samples are kept only when asked for"),
    }
}

/// The samples of every series (after the expression's grouping) in the
/// windows of `steps`, for a function that needs them all in one place.
pub(super) fn samples(
    expr: &RangeExpr,
    db: &Database,
    steps: &Steps,
    budget: &Budget,
) -> Result<Vec<(Labels, Samples)>, EvalError> {
    match run(expr, None, db, steps, budget, !mergeable(expr.func))? {
        Run::Samples(samples) => Ok(samples),
        Run::Series(_) => Err(EvalError::Invalid(format!(
            "{} combines across nodes without its samples",
            expr.func
        ))),
    }
}

/// Computes a non-mergeable function's points from every sample of each
/// series (the nodes' samples merged in time order).
pub(super) fn from_samples(
    expr: &RangeExpr,
    series: Vec<(Labels, Samples)>,
    steps: &Steps,
) -> Vec<Series> {
    let mut out: Vec<Series> = series
        .into_iter()
        .map(|(labels, samples)| {
            let mut window: VecDeque<(i64, f64)> = samples.into();
            let mut points = BTreeMap::new();
            for k in 0..steps.count {
                window_point(expr, &mut window, k, steps, &mut points);
            }
            Series { labels, points }
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    out
}

enum Run {
    Series(Vec<Series>),
    Samples(Vec<(Labels, Samples)>),
}

fn run(
    expr: &RangeExpr,
    pushed: Option<&Grouping>,
    db: &Database,
    steps: &Steps,
    budget: &Budget,
    collect: bool,
) -> Result<Run, EvalError> {
    let range = expr.range;
    let grouping = expr.grouping.as_ref().or(pushed);
    // Sample times are shifted by the offset, so step t sees (t - o - range, t - o].
    let start = steps
        .start
        .saturating_sub(expr.offset)
        .saturating_sub(range)
        .saturating_add(1);
    let end = steps.last().saturating_sub(expr.offset).saturating_add(1);
    let needed = grouping.filter(|g| !g.without).map(|g| g.labels.as_slice());
    let (query, pipeline) = expr.log.plan_for(start, end, needed);
    let absent = expr.func == RangeFunc::AbsentOverTime;
    let unwrapped = expr.log.unwrap.is_some();
    let mut series: HashMap<Arc<Labels>, Acc> = HashMap::new();
    // Labels after grouping, by the labels before it: grouping once per
    // distinct input series, not once per entry.
    let mut grouped: HashMap<Arc<Labels>, Arc<Labels>> = HashMap::new();
    let mut gathered = 0usize;
    for (n, entry) in db.query(query)?.enumerate() {
        if n % 4096 == 0 {
            budget.check()?;
        }
        let Some(out) = pipeline.process(&entry.labels, entry.timestamp, &entry.line, entry.level)
        else {
            continue;
        };
        let ts = entry.timestamp.saturating_add(expr.offset);
        let value = match expr.func {
            RangeFunc::BytesOverTime | RangeFunc::BytesRate => out.line.len() as f64,
            _ if unwrapped => out.value,
            _ => 1.0,
        };
        let labels = if absent {
            Arc::new(Labels::default())
        } else if let Some(l) = grouped.get(&out.labels) {
            l.clone()
        } else {
            let l = Arc::new(group(&out.labels, grouping));
            grouped.insert(out.labels.clone(), l.clone());
            l
        };
        if let Some(error) = labels.get(ERROR) {
            return Err(EvalError::Pipeline {
                error: error.to_owned(),
                series: labels.to_string(),
            });
        }
        if !series.contains_key(&labels) && series.len() >= budget.max_series {
            return Err(EvalError::TooManySeries(budget.max_series));
        }
        let acc = series.entry(labels).or_insert_with(|| {
            if additive(expr.func) || absent {
                Acc::Cells(BTreeMap::new())
            } else {
                Acc::Window {
                    samples: VecDeque::new(),
                    next: 0,
                    points: BTreeMap::new(),
                }
            }
        });
        match acc {
            Acc::Cells(cells) => {
                // Steps t with t - range < ts <= t.
                let first = if ts <= steps.start {
                    0
                } else {
                    (ts - steps.start + steps.step - 1) / steps.step
                };
                let last_t = ts.saturating_add(range - 1) - steps.start;
                if last_t < 0 {
                    continue;
                }
                let last = (last_t / steps.step).min(i64::from(steps.count) - 1);
                for k in first..=last {
                    *cells.entry(k as u32).or_insert(0.0) += value;
                }
            }
            Acc::Window {
                samples,
                next,
                points,
            } => {
                // Every step before this sample has seen its whole window.
                while !collect && *next < steps.count && steps.at(*next) < ts {
                    window_point(expr, samples, *next, steps, points);
                    *next += 1;
                }
                if collect {
                    gathered += 1;
                    if gathered > MAX_GATHERED_SAMPLES {
                        return Err(EvalError::Invalid(format!(
                            "{} grouped with by/without needs all its samples from every node in one place, and this query has more than {MAX_GATHERED_SAMPLES}; narrow the selector or the time range, or group after the function (e.g. max by (…) ({}(…)))",
                            expr.func, expr.func
                        )));
                    }
                }
                samples.push_back((ts, value));
            }
        }
    }
    let seconds = range as f64 / 1e9;
    if absent {
        let present: BTreeMap<u32, f64> = series
            .into_values()
            .next()
            .map(|acc| match acc {
                Acc::Cells(cells) => cells,
                Acc::Window { points, .. } => points,
            })
            .unwrap_or_default();
        let points: BTreeMap<u32, f64> = (0..steps.count)
            .filter(|k| !present.contains_key(k))
            .map(|k| (k, 1.0))
            .collect();
        if points.is_empty() {
            return Ok(Run::Series(Vec::new()));
        }
        return Ok(Run::Series(vec![Series {
            labels: absent_labels(expr),
            points,
        }]));
    }
    if collect {
        let mut out: Vec<(Labels, Samples)> = series
            .into_iter()
            .filter_map(|(labels, acc)| match acc {
                Acc::Window { samples, .. } => Some(((*labels).clone(), samples.into())),
                Acc::Cells(_) => None,
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        return Ok(Run::Samples(out));
    }
    let mut out: Vec<Series> = series
        .into_iter()
        .map(|(labels, acc)| {
            let points = match acc {
                Acc::Cells(cells) => cells
                    .into_iter()
                    .map(|(k, sum)| {
                        let v = match expr.func {
                            RangeFunc::Rate | RangeFunc::BytesRate => sum / seconds,
                            _ => sum,
                        };
                        (k, v)
                    })
                    .collect(),
                Acc::Window {
                    mut samples,
                    mut next,
                    mut points,
                } => {
                    while next < steps.count {
                        window_point(expr, &mut samples, next, steps, &mut points);
                        next += 1;
                    }
                    points
                }
            };
            Series {
                labels: (*labels).clone(),
                points,
            }
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(Run::Series(out))
}

/// The labels of `absent_over_time`'s series: the selector's equality
/// matchers, a name matched twice left out (as Loki and Prometheus do).
fn absent_labels(expr: &RangeExpr) -> Labels {
    let selector = &expr.log.selector;
    Labels::new(
        selector
            .iter()
            .filter(|m| m.op == MatchOp::Equal)
            .filter(|m| selector.iter().filter(|o| o.name == m.name).count() == 1)
            .map(|m| (m.name.clone(), m.value.clone())),
    )
}

/// Computes step `k` from the samples in its window, dropping the ones
/// that fell out of it.
fn window_point(
    expr: &RangeExpr,
    samples: &mut VecDeque<(i64, f64)>,
    k: u32,
    steps: &Steps,
    points: &mut BTreeMap<u32, f64>,
) {
    let t = steps.at(k);
    let low = t.saturating_sub(expr.range);
    while samples.front().is_some_and(|(ts, _)| *ts <= low) {
        samples.pop_front();
    }
    let in_window = samples.iter().take_while(|(ts, _)| *ts <= t);
    let values: Vec<f64> = in_window.clone().map(|(_, v)| *v).collect();
    if values.is_empty() {
        return;
    }
    let n = values.len() as f64;
    let v =
        match expr.func {
            RangeFunc::AvgOverTime => values.iter().sum::<f64>() / n,
            RangeFunc::MinOverTime => {
                values.iter().copied().fold(
                    f64::INFINITY,
                    |a, b| if b < a || a.is_nan() { b } else { a },
                )
            }
            RangeFunc::MaxOverTime => values.iter().copied().fold(f64::NEG_INFINITY, |a, b| {
                if b > a || a.is_nan() { b } else { a }
            }),
            RangeFunc::FirstOverTime => values[0],
            RangeFunc::LastOverTime => values[values.len() - 1],
            RangeFunc::StdvarOverTime => variance(&values),
            RangeFunc::StddevOverTime => variance(&values).sqrt(),
            RangeFunc::QuantileOverTime => quantile(expr.param.unwrap_or(0.5), values),
            RangeFunc::RateCounter => {
                let samples: Vec<(i64, f64)> = in_window.copied().collect();
                match counter_rate(&samples, t, expr.range) {
                    Some(v) => v,
                    None => return,
                }
            }
            // Additive functions never keep a window.
            _ => return,
        };
    points.insert(k, v);
}

/// Population variance, computed as Prometheus does (Welford).
pub(super) fn variance(values: &[f64]) -> f64 {
    let (mut count, mut mean, mut aux) = (0.0, 0.0, 0.0);
    for v in values {
        count += 1.0;
        let delta = v - mean;
        mean += delta / count;
        aux += delta * (v - mean);
    }
    aux / count
}

/// The φ-quantile with linear interpolation between closest ranks
/// (Prometheus's `quantile`): φ < 0 is -Inf, φ > 1 is +Inf.
pub(super) fn quantile(q: f64, mut values: Vec<f64>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0) as usize;
    let upper = (lower + 1).min(values.len() - 1);
    let weight = rank - rank.floor();
    values[lower] * (1.0 - weight) + values[upper] * weight
}

/// Per-second increase of a counter over the window, resets handled and
/// extrapolated to the window's edges as Prometheus's `rate` does.
fn counter_rate(samples: &[(i64, f64)], t: i64, range: i64) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let (first_t, first_v) = samples[0];
    let (last_t, last_v) = samples[samples.len() - 1];
    let mut result = last_v - first_v;
    for pair in samples.windows(2) {
        if pair[1].1 < pair[0].1 {
            result += pair[0].1;
        }
    }
    let secs = |ns: i64| ns as f64 / 1e9;
    let mut to_start = secs(first_t - (t - range));
    let to_end = secs(t - last_t);
    let sampled = secs(last_t - first_t);
    if sampled <= 0.0 {
        return None;
    }
    let average = sampled / (samples.len() - 1) as f64;
    if result > 0.0 && first_v >= 0.0 {
        let to_zero = sampled * (first_v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        average / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        average / 2.0
    };
    Some(result * (interval / sampled) / secs(range))
}
