//! Evaluates metric queries over the store on a grid of steps.
//!
//! A range aggregation streams the entries of its window once, in time
//! order. Additive functions (`count_over_time`, `rate`, `bytes_*`,
//! `sum_over_time`) add each sample to the steps whose window holds it, so
//! memory is one number per series and step; the others keep a sliding
//! window of samples per series. Vector aggregations, binary and set
//! operators then work on whole series.

mod binary;
pub mod leaves;
mod range;
#[cfg(test)]
mod tests;
mod vector;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::ast::MetricExpr;
use crate::log_database::labels::Labels;
use crate::log_database::{Database, StoreError};
pub use leaves::Leaf;

/// The evaluation grid: `count` steps at `start + k * step` (ns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// A sample carries `__error__` (Loki's pipeline error).
    #[error(
        "pipeline error: '{error}' for series: '{series}'.\nUse a label filter to intentionally skip this error. (e.g | __error__!=\"{error}\").\nTo skip all potential errors you can match empty errors.(e.g __error__=\"\")\nThe label filter can also be specified after unwrap. (e.g | unwrap latency | __error__=\"\" )"
    )]
    Pipeline {
        /// The error's name.
        error: String,
        /// The series' labels.
        series: String,
    },
    /// A construct that does not apply here (the client's mistake).
    #[error("{0}")]
    Invalid(String),
}

/// One series of a result: its labels and its values by step index.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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
    /// Series, in the order an instant query shows them (by labels,
    /// unless `sort`, `topk` and friends ordered them by value).
    Matrix(Vec<Series>),
}

/// Evaluates `expr` on `steps` over this node's store.
pub fn evaluate(
    expr: &MetricExpr,
    db: &Database,
    steps: &Steps,
    budget: &Budget,
) -> Result<Value, EvalError> {
    evaluate_with(expr, steps, &mut |leaf| match leaf {
        // `sum by (x)` of an additive range function: group while
        // counting, so only the grouped series are ever held and parsers
        // extract only `x` (as Loki does).
        Leaf::Sum { grouping, range } => {
            let pushed = grouping.cloned().unwrap_or(super::ast::Grouping {
                without: false,
                labels: Vec::new(),
            });
            range::evaluate(range, Some(&pushed), db, steps, budget)
        }
        Leaf::Range(range) => range::evaluate(range, None, db, steps, budget),
    })
}

/// Evaluates `expr` on `steps`, with each leaf's series (see
/// [`leaves::leaves`]) from `leaf`, asked in [`leaves::leaves`] order.
pub fn evaluate_with(
    expr: &MetricExpr,
    steps: &Steps,
    leaf: &mut dyn FnMut(Leaf) -> Result<Vec<Series>, EvalError>,
) -> Result<Value, EvalError> {
    match expr {
        MetricExpr::Number(n) => Ok(Value::Scalar(*n)),
        MetricExpr::Vector(n) => Ok(Value::Matrix(vec![Series {
            labels: Labels::default(),
            points: (0..steps.count).map(|k| (k, *n)).collect(),
        }])),
        MetricExpr::Range(range) => Ok(Value::Matrix(leaf(Leaf::Range(range))?)),
        MetricExpr::Aggregate {
            op,
            grouping,
            param,
            inner,
        } => {
            let series = match Leaf::sum(*op, grouping.as_ref(), inner) {
                Some(sum) => leaf(sum)?,
                None => match evaluate_with(inner, steps, leaf)? {
                    Value::Matrix(series) => series,
                    Value::Scalar(_) => {
                        return Err(EvalError::Invalid(
                            "an aggregation needs series, not a number (use vector(n))".into(),
                        ));
                    }
                },
            };
            Ok(Value::Matrix(vector::aggregate(
                *op,
                grouping.as_ref(),
                *param,
                series,
            )))
        }
        MetricExpr::LabelReplace {
            inner,
            dst,
            replacement,
            src,
            regex,
        } => match evaluate_with(inner, steps, leaf)? {
            Value::Matrix(series) => Ok(Value::Matrix(vector::label_replace(
                series,
                dst,
                replacement,
                src,
                regex,
            ))),
            Value::Scalar(_) => Err(EvalError::Invalid(
                "label_replace needs series, not a number".into(),
            )),
        },
        MetricExpr::Binary {
            op,
            modifier,
            lhs,
            rhs,
        } => {
            let l = evaluate_with(lhs, steps, leaf)?;
            let r = evaluate_with(rhs, steps, leaf)?;
            binary::apply(*op, modifier, l, r, steps)
        }
    }
}
