//! Evaluates metric queries over the store on a grid of steps.
//!
//! Range functions count entries in the window `(t - range, t]` of each step
//! `t`. Entries are streamed once in time order and added to the steps whose
//! window holds them, so memory is one number per series and step that has
//! data, whatever the number of entries.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::{AggregateOp, BinaryOp, Grouping, MetricExpr, RangeFunc};
use crate::log_database::labels::Labels;
use crate::log_database::query::Direction;
use crate::log_database::{Database, StoreError};

/// The evaluation grid: `count` steps at `start + k * step` (ns).
#[derive(Clone, Copy, Debug)]
pub struct Steps {
    /// The first step, ns.
    pub start: i64,
    /// The distance between steps, ns (> 0).
    pub step: i64,
    /// How many steps.
    pub count: u32,
}

impl Steps {
    /// The time of step `k`.
    pub fn at(&self, k: u32) -> i64 {
        self.start + i64::from(k) * self.step
    }

    fn last(&self) -> i64 {
        self.at(self.count.saturating_sub(1))
    }
}

/// Limits and cancellation for one query.
#[derive(Clone, Debug)]
pub struct Budget {
    /// Give up after this.
    pub deadline: Instant,
    /// Set when the client went away.
    pub cancelled: Arc<AtomicBool>,
    /// At most this many series in any intermediate result.
    pub max_series: usize,
    /// The daemon's memory ceiling: a query stops when it gets critical.
    pub memory: crate::memory::MemoryLimit,
}

impl Budget {
    /// Fails once the deadline passed, the client went away, or the daemon
    /// is about to run out of memory.
    pub fn check(&self) -> Result<(), EvalError> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(EvalError::Cancelled);
        }
        if Instant::now() >= self.deadline {
            return Err(EvalError::Timeout);
        }
        if self.memory.pressure() == crate::memory::Pressure::Critical {
            return Err(EvalError::OutOfMemory);
        }
        Ok(())
    }
}

/// Why a query could not be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Too many series.
    #[error(
        "the query produces more than {0} series; narrow the selector or aggregate with by (...)"
    )]
    TooManySeries(usize),
    /// The deadline passed.
    #[error("the query took longer than its time limit; narrow the selector or the time range")]
    Timeout,
    /// The client went away.
    #[error("the query was cancelled")]
    Cancelled,
    /// Stopped to keep the daemon under its memory limit.
    #[error(
        "the query was stopped: the daemon is near its memory limit (--memory-limit); try again later, or narrow the selector or the time range"
    )]
    OutOfMemory,
    /// A construct that does not apply here.
    #[error("{0}")]
    Invalid(String),
}

/// One series of a result: its labels and its values by step index.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The labels.
    pub labels: Labels,
    /// Values by step index; steps without a value are absent.
    pub points: BTreeMap<u32, f64>,
}

/// A result.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A number, the same at every step.
    Scalar(f64),
    /// Series.
    Matrix(Vec<Series>),
}

/// Evaluates `expr` on `steps`.
pub fn evaluate(
    expr: &MetricExpr,
    db: &Database,
    steps: &Steps,
    budget: &Budget,
) -> Result<Value, EvalError> {
    match expr {
        MetricExpr::Number(n) => Ok(Value::Scalar(*n)),
        MetricExpr::Vector(n) => Ok(Value::Matrix(vec![Series {
            labels: Labels::default(),
            points: (0..steps.count).map(|k| (k, *n)).collect(),
        }])),
        MetricExpr::Range { func, log, range } => {
            range_function(*func, log, *range, db, steps, budget)
        }
        MetricExpr::Aggregate {
            op,
            grouping,
            param,
            inner,
        } => match evaluate(inner, db, steps, budget)? {
            Value::Matrix(series) => Ok(Value::Matrix(aggregate(
                *op,
                grouping.as_ref(),
                *param,
                series,
            ))),
            Value::Scalar(_) => Err(EvalError::Invalid(
                "an aggregation needs series, not a number (use vector(n))".into(),
            )),
        },
        MetricExpr::Binary { op, lhs, rhs } => {
            let l = evaluate(lhs, db, steps, budget)?;
            let r = evaluate(rhs, db, steps, budget)?;
            binary(*op, l, r)
        }
    }
}

fn range_function(
    func: RangeFunc,
    log: &super::LogExpr,
    range: i64,
    db: &Database,
    steps: &Steps,
    budget: &Budget,
) -> Result<Value, EvalError> {
    let start = steps.start.saturating_sub(range).saturating_add(1);
    let end = steps.last().saturating_add(1);
    let (query, pipeline) = log.plan(start, end, Direction::Forward);
    // (entries, bytes) per series and step.
    let mut cells: HashMap<Arc<Labels>, BTreeMap<u32, (f64, f64)>> = HashMap::new();
    for (n, entry) in db.query(query)?.enumerate() {
        if n % 4096 == 0 {
            budget.check()?;
        }
        let Some(out) = pipeline.process(&entry.labels, entry.timestamp, &entry.line) else {
            continue;
        };
        let ts = entry.timestamp;
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
        if first > last {
            continue;
        }
        if !cells.contains_key(&out.labels) && cells.len() >= budget.max_series {
            return Err(EvalError::TooManySeries(budget.max_series));
        }
        let series = cells.entry(out.labels).or_default();
        let bytes = out.line.len() as f64;
        for k in first..=last {
            let cell = series.entry(k as u32).or_insert((0.0, 0.0));
            cell.0 += 1.0;
            cell.1 += bytes;
        }
    }
    let seconds = range as f64 / 1e9;
    let mut out: Vec<Series> = cells
        .into_iter()
        .map(|(labels, points)| Series {
            labels: (*labels).clone(),
            points: points
                .into_iter()
                .map(|(k, (count, bytes))| {
                    let v = match func {
                        RangeFunc::CountOverTime => count,
                        RangeFunc::Rate => count / seconds,
                        RangeFunc::BytesOverTime => bytes,
                        RangeFunc::BytesRate => bytes / seconds,
                    };
                    (k, v)
                })
                .collect(),
        })
        .collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(Value::Matrix(out))
}

fn group_labels(labels: &Labels, grouping: Option<&Grouping>) -> Labels {
    match grouping {
        None => Labels::default(),
        Some(g) if g.without => Labels::new(
            labels
                .iter()
                .filter(|(n, _)| !g.labels.iter().any(|l| l == n))
                .map(|(n, v)| (n.to_owned(), v.to_owned())),
        ),
        Some(g) => Labels::new(
            labels
                .iter()
                .filter(|(n, _)| g.labels.iter().any(|l| l == n))
                .map(|(n, v)| (n.to_owned(), v.to_owned())),
        ),
    }
}

fn aggregate(
    op: AggregateOp,
    grouping: Option<&Grouping>,
    param: Option<f64>,
    series: Vec<Series>,
) -> Vec<Series> {
    if op == AggregateOp::Topk {
        let k = param.unwrap_or(1.0) as usize;
        let keys: Vec<Labels> = series
            .iter()
            .map(|s| group_labels(&s.labels, grouping))
            .collect();
        let mut out: Vec<Series> = series
            .iter()
            .map(|s| Series {
                labels: s.labels.clone(),
                points: BTreeMap::new(),
            })
            .collect();
        let all_steps: std::collections::BTreeSet<u32> = series
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
                members.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                for (v, i) in members.into_iter().take(k) {
                    out[i].points.insert(step, v);
                }
            }
        }
        out.retain(|s| !s.points.is_empty());
        return out;
    }
    // (sum, count, min, max) per group and step.
    type Acc = (f64, f64, f64, f64);
    let mut groups: BTreeMap<Labels, BTreeMap<u32, Acc>> = BTreeMap::new();
    for s in series {
        let key = group_labels(&s.labels, grouping);
        let group = groups.entry(key).or_default();
        for (k, v) in s.points {
            let acc = group
                .entry(k)
                .or_insert((0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY));
            acc.0 += v;
            acc.1 += 1.0;
            acc.2 = acc.2.min(v);
            acc.3 = acc.3.max(v);
        }
    }
    groups
        .into_iter()
        .map(|(labels, points)| Series {
            labels,
            points: points
                .into_iter()
                .map(|(k, (sum, count, min, max))| {
                    let v = match op {
                        AggregateOp::Sum => sum,
                        AggregateOp::Count => count,
                        AggregateOp::Min => min,
                        AggregateOp::Max => max,
                        AggregateOp::Avg => sum / count,
                        AggregateOp::Topk => unreachable!("handled above"),
                    };
                    (k, v)
                })
                .collect(),
        })
        .collect()
}

fn arithmetic(op: BinaryOp, a: f64, b: f64) -> Option<f64> {
    Some(match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Mod => a % b,
        BinaryOp::Pow => a.powf(b),
        _ => return None,
    })
}

fn compare(op: BinaryOp, a: f64, b: f64) -> bool {
    match op {
        BinaryOp::Eq => a == b,
        BinaryOp::Ne => a != b,
        BinaryOp::Lt => a < b,
        BinaryOp::Le => a <= b,
        BinaryOp::Gt => a > b,
        BinaryOp::Ge => a >= b,
        _ => false,
    }
}

/// Applies `op` to one pair of values: arithmetic gives the result; a
/// comparison keeps the series' own value (`keep`) when it holds.
fn apply(op: BinaryOp, a: f64, b: f64, keep: f64) -> Option<f64> {
    arithmetic(op, a, b).or_else(|| compare(op, a, b).then_some(keep))
}

fn binary(op: BinaryOp, lhs: Value, rhs: Value) -> Result<Value, EvalError> {
    Ok(match (lhs, rhs) {
        (Value::Scalar(a), Value::Scalar(b)) => match arithmetic(op, a, b) {
            Some(v) => Value::Scalar(v),
            None => {
                return Err(EvalError::Invalid(
                    "comparisons between two numbers need the 'bool' modifier, which is not implemented".into(),
                ));
            }
        },
        (Value::Matrix(m), Value::Scalar(s)) => {
            Value::Matrix(map_points(m, |v| apply(op, v, s, v)))
        }
        (Value::Scalar(s), Value::Matrix(m)) => {
            Value::Matrix(map_points(m, |v| apply(op, s, v, v)))
        }
        (Value::Matrix(l), Value::Matrix(r)) => {
            let right: HashMap<&Labels, &Series> = r.iter().map(|s| (&s.labels, s)).collect();
            let mut out = Vec::new();
            for s in &l {
                let Some(other) = right.get(&s.labels) else {
                    continue;
                };
                let points: BTreeMap<u32, f64> = s
                    .points
                    .iter()
                    .filter_map(|(k, a)| {
                        let b = other.points.get(k)?;
                        apply(op, *a, *b, *a).map(|v| (*k, v))
                    })
                    .collect();
                if !points.is_empty() {
                    out.push(Series {
                        labels: s.labels.clone(),
                        points,
                    });
                }
            }
            Value::Matrix(out)
        }
    })
}

fn map_points(series: Vec<Series>, f: impl Fn(f64) -> Option<f64>) -> Vec<Series> {
    series
        .into_iter()
        .map(|s| Series {
            labels: s.labels,
            points: s
                .points
                .into_iter()
                .filter_map(|(k, v)| f(v).map(|v| (k, v)))
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_database::{Config, StreamEntries, WriteBatch};
    use crate::logql::{Expr, parse};

    const S: i64 = 1_000_000_000;

    fn db() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = Database::open(dir.path(), Config::default()).unwrap();
        let mut batch = WriteBatch::default();
        for (level, times) in [("error", vec![1, 2, 2, 9]), ("info", vec![3, 4])] {
            batch.streams.push(StreamEntries::with(
                Labels::new([("app", "web"), ("level", level)]),
                times
                    .into_iter()
                    .map(|t| (t * S, format!("{level} line").into_bytes())),
            ));
        }
        db.write(&batch).unwrap();
        (dir, db)
    }

    fn eval(db: &Database, query: &str, steps: Steps) -> Value {
        let Expr::Metric(m) = parse(query).unwrap() else {
            panic!("{query} is not a metric query")
        };
        let budget = Budget {
            deadline: Instant::now() + std::time::Duration::from_secs(10),
            cancelled: Arc::default(),
            max_series: 100,
            memory: crate::memory::MemoryLimit::default(),
        };
        evaluate(&m, db, &steps, &budget).unwrap()
    }

    fn points(v: &Value) -> Vec<(String, Vec<(u32, f64)>)> {
        let Value::Matrix(m) = v else { panic!("{v:?}") };
        m.iter()
            .map(|s| {
                (
                    s.labels.to_string(),
                    s.points.iter().map(|(k, v)| (*k, *v)).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn grafana_health_check_is_two() {
        let (_dir, db) = db();
        let one = Steps {
            start: S,
            step: S,
            count: 1,
        };
        assert_eq!(
            points(&eval(&db, "vector(1)+vector(1)", one)),
            vec![("{}".into(), vec![(0, 2.0)])]
        );
        assert_eq!(eval(&db, "1 + 2 * 3", one), Value::Scalar(7.0));
    }

    #[test]
    fn count_over_time_windows_are_left_open() {
        let (_dir, db) = db();
        // Steps at 2s, 4s, 6s, 8s, 10s with 2s windows: (0,2] (2,4] ...
        let steps = Steps {
            start: 2 * S,
            step: 2 * S,
            count: 5,
        };
        let got = points(&eval(&db, r#"count_over_time({app="web"}[2s])"#, steps));
        assert_eq!(
            got,
            vec![
                (
                    r#"{app="web", level="error"}"#.into(),
                    vec![(0, 3.0), (4, 1.0)]
                ),
                (r#"{app="web", level="info"}"#.into(), vec![(1, 2.0)]),
            ]
        );
        let volume = points(&eval(
            &db,
            r#"sum by (level) (count_over_time({app="web"}[2s]))"#,
            steps,
        ));
        assert_eq!(
            volume[0],
            (r#"{level="error"}"#.into(), vec![(0, 3.0), (4, 1.0)])
        );
        let total = points(&eval(
            &db,
            r#"sum(rate({app="web"}[10s]))"#,
            Steps {
                start: 10 * S,
                step: S,
                count: 1,
            },
        ));
        assert!((total[0].1[0].1 - 0.6).abs() < 1e-9, "{total:?}");
        let bytes = points(&eval(
            &db,
            r#"sum(bytes_over_time({app="web"} |= "info" [10s]))"#,
            Steps {
                start: 10 * S,
                step: S,
                count: 1,
            },
        ));
        assert_eq!(bytes, vec![("{}".into(), vec![(0, 18.0)])]);
    }

    #[test]
    fn aggregations_and_arithmetic() {
        let (_dir, db) = db();
        let at10 = Steps {
            start: 10 * S,
            step: S,
            count: 1,
        };
        let q = |s: &str| points(&eval(&db, s, at10));
        assert_eq!(
            q(r#"count(count_over_time({app="web"}[10s]))"#),
            vec![("{}".into(), vec![(0, 2.0)])]
        );
        assert_eq!(
            q(r#"max(count_over_time({app="web"}[10s]))"#)[0].1,
            vec![(0, 4.0)]
        );
        assert_eq!(
            q(r#"min(count_over_time({app="web"}[10s]))"#)[0].1,
            vec![(0, 2.0)]
        );
        assert_eq!(
            q(r#"avg(count_over_time({app="web"}[10s]))"#)[0].1,
            vec![(0, 3.0)]
        );
        let top = q(r#"topk(1, count_over_time({app="web"}[10s]))"#);
        assert_eq!(
            top,
            vec![(r#"{app="web", level="error"}"#.into(), vec![(0, 4.0)])]
        );
        assert_eq!(
            q(r#"sum without (level) (count_over_time({app="web"}[10s])) * 2"#),
            vec![(r#"{app="web"}"#.into(), vec![(0, 12.0)])]
        );
        assert_eq!(q(r#"count_over_time({app="web"}[10s]) > 3"#).len(), 1);
        let ratio = q(
            r#"sum by (app) (count_over_time({app="web"} |= "error" [10s])) / sum by (app) (count_over_time({app="web"}[10s]))"#,
        );
        assert!((ratio[0].1[0].1 - 4.0 / 6.0).abs() < 1e-9);
    }
}
