//! LogQL, the subset users and Grafana need: stream selectors, line filters,
//! the `json` and `logfmt` parsers, label filters, `line_format`, and the
//! metric queries Grafana sends (`count_over_time`, `rate`, `bytes_over_time`,
//! `bytes_rate`; `sum`, `count`, `min`, `max`, `avg`, `topk` with `by` /
//! `without`; `vector(n)`, numbers and arithmetic). Anything else is refused
//! with the name of the construct.

mod lexer;
pub mod metric;
mod parser;
pub mod pipeline;

use std::fmt;

use crate::log_database::query::{LineFilter, Matcher};

pub use lexer::parse_duration;
pub use parser::parse;

/// A parse error, positioned for the person who typed the query.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("parse error at {line}:{col}: {message}")]
pub struct ParseError {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
    /// What was expected or wrong.
    pub message: String,
}

/// A parsed query.
#[derive(Clone, Debug)]
pub enum Expr {
    /// Returns log lines.
    Log(LogExpr),
    /// Returns numbers.
    Metric(MetricExpr),
}

/// A stream selector and a pipeline.
#[derive(Clone, Debug)]
pub struct LogExpr {
    /// The stream selector.
    pub selector: Vec<Matcher>,
    /// Stages, in order.
    pub stages: Vec<Stage>,
}

/// One pipeline stage.
#[derive(Clone, Debug)]
pub enum Stage {
    /// `|= != |~ !~`
    Line(Box<LineFilter>),
    /// `| json`
    Json,
    /// `| logfmt`
    Logfmt,
    /// `| <label predicate>`
    Labels(LabelPredicate),
    /// `| line_format "<template>"`
    LineFormat(Template),
}

/// A label predicate after a parser.
#[derive(Clone, Debug)]
pub enum LabelPredicate {
    /// Both hold.
    And(Box<LabelPredicate>, Box<LabelPredicate>),
    /// Either holds.
    Or(Box<LabelPredicate>, Box<LabelPredicate>),
    /// A string match: `name="v"`, `!=`, `=~`, `!~`.
    Match(Matcher),
    /// A numeric comparison: `status >= 500`, `took > 20ms`, `size > 1MB`.
    Compare {
        /// The label.
        name: String,
        /// The comparison.
        op: CompareOp,
        /// The literal, as a number (durations in seconds, sizes in bytes).
        value: f64,
        /// How to read the label's value.
        kind: ValueKind,
    },
}

/// A numeric comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CompareOp {
    /// Applies the comparison.
    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Self::Eq => a == b,
            Self::Ne => a != b,
            Self::Lt => a < b,
            Self::Le => a <= b,
            Self::Gt => a > b,
            Self::Ge => a >= b,
        }
    }
}

/// How a label value is read for a numeric comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// A plain number.
    Number,
    /// A duration like `250ms` (compared in seconds).
    Duration,
    /// A size like `1.5MB` (compared in bytes).
    Bytes,
}

/// A `line_format` template: literal text and `{{ .label }}` references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template(pub Vec<TemplatePart>);

/// A piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplatePart {
    /// Literal text.
    Text(String),
    /// A label's value (empty when missing).
    Label(String),
    /// The current line (`{{ __line__ }}`).
    Line,
}

/// A metric query.
#[derive(Clone, Debug)]
pub enum MetricExpr {
    /// `count_over_time({…}[5m])` and friends.
    Range {
        /// The function.
        func: RangeFunc,
        /// The log query it counts.
        log: LogExpr,
        /// The window, ns.
        range: i64,
    },
    /// `sum by (x) (…)` and friends.
    Aggregate {
        /// The aggregation.
        op: AggregateOp,
        /// `by` / `without` labels.
        grouping: Option<Grouping>,
        /// `k` for `topk`.
        param: Option<f64>,
        /// What is aggregated.
        inner: Box<MetricExpr>,
    },
    /// Arithmetic or comparison between two metric expressions.
    Binary {
        /// The operator.
        op: BinaryOp,
        /// Left side.
        lhs: Box<MetricExpr>,
        /// Right side.
        rhs: Box<MetricExpr>,
    },
    /// A number literal (a scalar).
    Number(f64),
    /// `vector(n)`: one series without labels.
    Vector(f64),
}

/// Range-vector functions over a log query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeFunc {
    /// Entries per window.
    CountOverTime,
    /// Entries per second.
    Rate,
    /// Line bytes per window.
    BytesOverTime,
    /// Line bytes per second.
    BytesRate,
}

/// Vector aggregations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggregateOp {
    /// Sum.
    Sum,
    /// Number of series.
    Count,
    /// Smallest.
    Min,
    /// Largest.
    Max,
    /// Mean.
    Avg,
    /// The k largest series.
    Topk,
}

/// `by (…)` or `without (…)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grouping {
    /// `without` rather than `by`.
    pub without: bool,
    /// The labels.
    pub labels: Vec<String>,
}

/// Binary operators, lowest precedence first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `^`
    Pow,
}

impl fmt::Display for RangeFunc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CountOverTime => "count_over_time",
            Self::Rate => "rate",
            Self::BytesOverTime => "bytes_over_time",
            Self::BytesRate => "bytes_rate",
        })
    }
}
