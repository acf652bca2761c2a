//! Binary operators between numbers and series: arithmetic, comparisons
//! (filtering, or 0/1 with `bool`), `and` / `or` / `unless`, with
//! Prometheus's vector matching (`on`, `ignoring`, `group_left`,
//! `group_right`).

use std::collections::{BTreeMap, HashMap};

use super::{EvalError, Series, Steps, Value};
use crate::log_database::labels::Labels;
use crate::logql::ast::{BinaryModifier, BinaryOp, GroupSide, VectorMatching};

fn arithmetic(op: BinaryOp, a: f64, b: f64) -> Option<f64> {
    Some(match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        // Loki answers NaN for a division by zero, deliberately.
        BinaryOp::Div if b == 0.0 => f64::NAN,
        BinaryOp::Div => a / b,
        BinaryOp::Mod if b == 0.0 => f64::NAN,
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

/// One pair of values: arithmetic gives the result; a comparison gives
/// 0/1 with `bool`, else `keep` when it holds and nothing when not.
fn pair(op: BinaryOp, bool_: bool, a: f64, b: f64, keep: f64) -> Option<f64> {
    if let Some(v) = arithmetic(op, a, b) {
        return Some(v);
    }
    let holds = compare(op, a, b);
    if bool_ {
        Some(if holds { 1.0 } else { 0.0 })
    } else {
        holds.then_some(keep)
    }
}

/// The labels two series are matched on.
fn signature(labels: &Labels, matching: Option<&VectorMatching>) -> Labels {
    match matching {
        None => labels.clone(),
        Some(m) => labels.filtered(&m.labels, m.on),
    }
}

/// Applies `op`.
pub(super) fn apply(
    op: BinaryOp,
    modifier: &BinaryModifier,
    lhs: Value,
    rhs: Value,
    steps: &Steps,
) -> Result<Value, EvalError> {
    let bool_ = modifier.return_bool;
    Ok(match (lhs, rhs) {
        (Value::Scalar(a), Value::Scalar(b)) => {
            if op.is_comparison() && !bool_ {
                return Err(EvalError::Invalid(
                    "comparisons between scalars must use BOOL modifier".into(),
                ));
            }
            Value::Scalar(pair(op, true, a, b, a).unwrap_or(f64::NAN))
        }
        (Value::Matrix(m), Value::Scalar(s)) => {
            Value::Matrix(map_points(m, |v| pair(op, bool_, v, s, v)))
        }
        (Value::Scalar(s), Value::Matrix(m)) => {
            Value::Matrix(map_points(m, |v| pair(op, bool_, s, v, v)))
        }
        (Value::Matrix(l), Value::Matrix(r)) if op.is_set() => {
            Value::Matrix(set(op, modifier.matching.as_ref(), l, r, steps))
        }
        (Value::Matrix(l), Value::Matrix(r)) => Value::Matrix(vectors(op, modifier, l, r, steps)?),
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

/// `and`, `or`, `unless`, step by step.
fn set(
    op: BinaryOp,
    matching: Option<&VectorMatching>,
    lhs: Vec<Series>,
    rhs: Vec<Series>,
    steps: &Steps,
) -> Vec<Series> {
    let sig_l: Vec<Labels> = lhs.iter().map(|s| signature(&s.labels, matching)).collect();
    let sig_r: Vec<Labels> = rhs.iter().map(|s| signature(&s.labels, matching)).collect();
    let mut out: BTreeMap<Labels, BTreeMap<u32, f64>> = BTreeMap::new();
    let mut order: Vec<Labels> = Vec::new();
    let mut push =
        |labels: &Labels, k: u32, v: f64, out: &mut BTreeMap<Labels, BTreeMap<u32, f64>>| {
            if !out.contains_key(labels) {
                order.push(labels.clone());
            }
            out.entry(labels.clone()).or_default().insert(k, v);
        };
    for k in 0..steps.count {
        let right: std::collections::HashSet<&Labels> = rhs
            .iter()
            .zip(&sig_r)
            .filter(|(s, _)| s.points.contains_key(&k))
            .map(|(_, sig)| sig)
            .collect();
        let left: std::collections::HashSet<&Labels> = lhs
            .iter()
            .zip(&sig_l)
            .filter(|(s, _)| s.points.contains_key(&k))
            .map(|(_, sig)| sig)
            .collect();
        for (s, sig) in lhs.iter().zip(&sig_l) {
            let Some(v) = s.points.get(&k) else { continue };
            let keep = match op {
                BinaryOp::And => right.contains(sig),
                BinaryOp::Unless => !right.contains(sig),
                _ => true,
            };
            if keep {
                push(&s.labels, k, *v, &mut out);
            }
        }
        if op == BinaryOp::Or {
            for (s, sig) in rhs.iter().zip(&sig_r) {
                if let Some(v) = s.points.get(&k)
                    && !left.contains(sig)
                {
                    push(&s.labels, k, *v, &mut out);
                }
            }
        }
    }
    order
        .into_iter()
        .filter_map(|labels| {
            let points = out.remove(&labels)?;
            Some(Series { labels, points })
        })
        .collect()
}

/// The labels of a result series (Prometheus's `resultMetric`).
fn result_labels(many: &Labels, one: &Labels, matching: Option<&VectorMatching>) -> Labels {
    let Some(m) = matching else {
        return many.clone();
    };
    let mut pairs = match &m.group {
        // One-to-one: keep the `on` labels, or drop the `ignoring` ones.
        None => signature(many, matching).to_pairs(),
        Some(_) => many.to_pairs(),
    };
    if let Some(GroupSide::Left(include) | GroupSide::Right(include)) = &m.group {
        for name in include {
            pairs.retain(|(n, _)| n != name);
            if let Some(v) = one.get(name) {
                pairs.push((name.clone(), v.to_owned()));
            }
        }
    }
    Labels::new(pairs)
}

/// Arithmetic and comparisons between two sets of series.
fn vectors(
    op: BinaryOp,
    modifier: &BinaryModifier,
    lhs: Vec<Series>,
    rhs: Vec<Series>,
    steps: &Steps,
) -> Result<Vec<Series>, EvalError> {
    let matching = modifier.matching.as_ref();
    // With group_right the right side has the many.
    let right_many = matches!(
        matching.and_then(|m| m.group.as_ref()),
        Some(GroupSide::Right(_))
    );
    let grouped = matching.is_some_and(|m| m.group.is_some());
    let (many, one) = if right_many {
        (&rhs, &lhs)
    } else {
        (&lhs, &rhs)
    };
    let sig_many: Vec<Labels> = many
        .iter()
        .map(|s| signature(&s.labels, matching))
        .collect();
    let sig_one: Vec<Labels> = one.iter().map(|s| signature(&s.labels, matching)).collect();
    let mut out: BTreeMap<Labels, BTreeMap<u32, f64>> = BTreeMap::new();
    for k in 0..steps.count {
        let mut ones: HashMap<&Labels, usize> = HashMap::new();
        for (i, (s, sig)) in one.iter().zip(&sig_one).enumerate() {
            if s.points.contains_key(&k) && ones.insert(sig, i).is_some() {
                return Err(EvalError::Invalid(format!(
                    "found duplicate series for the match group {sig} on the {} side of the operation; many-to-many matching not allowed: matching labels must be unique on one side",
                    if right_many { "left" } else { "right" }
                )));
            }
        }
        let mut seen: HashMap<&Labels, ()> = HashMap::new();
        for (s, sig) in many.iter().zip(&sig_many) {
            let Some(a) = s.points.get(&k) else { continue };
            let Some(&j) = ones.get(sig) else { continue };
            if !grouped && seen.insert(sig, ()).is_some() {
                return Err(EvalError::Invalid(format!(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right); match group {sig}"
                )));
            }
            let other = &one[j];
            let b = other.points[&k];
            // The values in the operator's order.
            let (x, y) = if right_many { (b, *a) } else { (*a, b) };
            let keep = if right_many { y } else { x };
            let Some(v) = pair(op, modifier.return_bool, x, y, keep) else {
                continue;
            };
            let mut labels = result_labels(&s.labels, &other.labels, matching);
            if op.is_comparison() && !modifier.return_bool && matching.is_none() {
                labels = s.labels.clone();
            }
            out.entry(labels).or_default().insert(k, v);
        }
    }
    Ok(out
        .into_iter()
        .map(|(labels, points)| Series { labels, points })
        .collect())
}
