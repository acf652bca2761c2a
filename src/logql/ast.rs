//! The shape of a parsed query: what the parser builds and the engine runs.

use std::fmt;
use std::sync::Arc;

use regex::Regex;

use super::ip::IpMatcher;
use super::pattern::Pattern;
use super::template::Template;
use crate::log_database::query::{LineFilter, Matcher};

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
    /// `| unwrap …` and the label filters after it (range aggregations only).
    pub unwrap: Option<Unwrap>,
}

/// `| unwrap [conversion(]label[)]`, then label filters on the sample.
#[derive(Clone, Debug)]
pub struct Unwrap {
    /// The label whose value becomes the sample.
    pub label: String,
    /// How the value is read.
    pub conversion: Conversion,
    /// Label filters after the unwrap (usually `| __error__=""`).
    pub post: Vec<LabelPredicate>,
}

/// How an unwrapped label value becomes a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conversion {
    /// A float, as Go's `strconv.ParseFloat` reads it.
    Float,
    /// A Go duration (`250ms`), in seconds.
    Duration,
    /// A humanized size (`5 MiB`), in bytes.
    Bytes,
}

/// One pipeline stage.
#[derive(Clone, Debug)]
pub enum Stage {
    /// `|= != |~ !~ |> !>`, with `or` branches folded in.
    Line(Box<LineFilter>),
    /// `| json`, or `| json a="b.c", d` (only those fields).
    Json(Vec<(String, JsonPath)>),
    /// `| logfmt [--strict] [--keep-empty] [a="b", c]`.
    Logfmt(LogfmtOptions),
    /// `| regexp "(?P<name>…)"`.
    Regexp(Arc<NamedRegex>),
    /// `| pattern "<ip> - <_>"`.
    Pattern(Arc<Pattern>),
    /// `| unpack`.
    Unpack,
    /// `| <label predicate>`.
    Labels(LabelPredicate),
    /// `| line_format "<template>"`.
    LineFormat(Arc<Template>),
    /// `| label_format a=b, c="{{…}}"`.
    LabelFormat(Vec<LabelFormat>),
    /// `| drop a, b="v"`.
    Drop(Vec<LabelSelection>),
    /// `| keep a, b="v"`.
    Keep(Vec<LabelSelection>),
    /// `| decolorize`.
    Decolorize,
}

/// A path into a JSON document: `a.b[0]["c d"]`.
pub type JsonPath = Vec<PathStep>;

/// One step of a [`JsonPath`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathStep {
    /// An object field.
    Field(String),
    /// An array element.
    Index(usize),
}

/// The options of a `logfmt` stage.
#[derive(Clone, Debug, Default)]
pub struct LogfmtOptions {
    /// Stop at the first malformed pair, with an error.
    pub strict: bool,
    /// Keep standalone keys as empty labels.
    pub keep_empty: bool,
    /// `label="key"` extractions; empty means every key.
    pub fields: Vec<(String, String)>,
}

/// A regular expression with named groups, for the `regexp` stage.
#[derive(Clone, Debug)]
pub struct NamedRegex {
    /// The compiled expression.
    pub regex: regex::bytes::Regex,
    /// The label for each group index (`None` for unnamed groups).
    pub names: Vec<Option<String>>,
}

/// One operation of `label_format`.
#[derive(Clone, Debug)]
pub enum LabelFormat {
    /// `dst=src`: rename, dropping `src`.
    Rename {
        /// The new name.
        dst: String,
        /// The label renamed.
        src: String,
    },
    /// `dst="{{…}}"`: set from a template.
    Template {
        /// The label set.
        dst: String,
        /// Its value.
        template: Arc<Template>,
    },
}

/// A label named by `drop` or `keep`, optionally only when it matches.
#[derive(Clone, Debug)]
pub struct LabelSelection {
    /// The label.
    pub name: String,
    /// Only when its value matches this.
    pub matcher: Option<Matcher>,
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
    /// `addr = ip("10.0.0.0/8")` (or `!=`).
    Ip {
        /// The label.
        name: String,
        /// `!=` rather than `=`.
        negate: bool,
        /// The addresses matched.
        ip: Arc<IpMatcher>,
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

/// A metric query.
#[derive(Clone, Debug)]
pub enum MetricExpr {
    /// `count_over_time({…}[5m])` and friends.
    Range(Box<RangeExpr>),
    /// `sum by (x) (…)` and friends.
    Aggregate {
        /// The aggregation.
        op: AggregateOp,
        /// `by` / `without` labels.
        grouping: Option<Grouping>,
        /// `k` for `topk` / `bottomk`.
        param: Option<f64>,
        /// What is aggregated.
        inner: Box<MetricExpr>,
    },
    /// Arithmetic, comparison or set operation between two expressions.
    Binary {
        /// The operator.
        op: BinaryOp,
        /// `bool`, `on`/`ignoring`, `group_left`/`group_right`.
        modifier: BinaryModifier,
        /// Left side.
        lhs: Box<MetricExpr>,
        /// Right side.
        rhs: Box<MetricExpr>,
    },
    /// `label_replace(v, "dst", "replacement", "src", "regex")`.
    LabelReplace {
        /// The series relabelled.
        inner: Box<MetricExpr>,
        /// The label written.
        dst: String,
        /// Its value, with `$1` references.
        replacement: String,
        /// The label matched.
        src: String,
        /// The (anchored) regex.
        regex: Regex,
    },
    /// A number literal (a scalar).
    Number(f64),
    /// `vector(n)`: one series without labels.
    Vector(f64),
}

/// A range aggregation over a log query.
#[derive(Clone, Debug)]
pub struct RangeExpr {
    /// The function.
    pub func: RangeFunc,
    /// The log query it reads (with an unwrap for the unwrapped functions).
    pub log: LogExpr,
    /// The window, ns.
    pub range: i64,
    /// `offset`, ns.
    pub offset: i64,
    /// `by` / `without` after the function.
    pub grouping: Option<Grouping>,
    /// φ for `quantile_over_time`.
    pub param: Option<f64>,
}

/// Range-vector functions over a log query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeFunc {
    /// Entries per window.
    CountOverTime,
    /// Entries (or unwrapped values) per second.
    Rate,
    /// Line bytes per window.
    BytesOverTime,
    /// Line bytes per second.
    BytesRate,
    /// 1 when the window has nothing.
    AbsentOverTime,
    /// Sum of values.
    SumOverTime,
    /// Mean of values.
    AvgOverTime,
    /// Smallest value.
    MinOverTime,
    /// Largest value.
    MaxOverTime,
    /// Oldest value.
    FirstOverTime,
    /// Newest value.
    LastOverTime,
    /// Population standard deviation.
    StddevOverTime,
    /// Population variance.
    StdvarOverTime,
    /// φ-quantile.
    QuantileOverTime,
    /// Per-second increase of a counter, resets handled.
    RateCounter,
}

impl RangeFunc {
    /// The function named `name`.
    pub fn named(name: &str) -> Option<Self> {
        Some(match name {
            "count_over_time" => Self::CountOverTime,
            "rate" => Self::Rate,
            "bytes_over_time" => Self::BytesOverTime,
            "bytes_rate" => Self::BytesRate,
            "absent_over_time" => Self::AbsentOverTime,
            "sum_over_time" => Self::SumOverTime,
            "avg_over_time" => Self::AvgOverTime,
            "min_over_time" => Self::MinOverTime,
            "max_over_time" => Self::MaxOverTime,
            "first_over_time" => Self::FirstOverTime,
            "last_over_time" => Self::LastOverTime,
            "stddev_over_time" => Self::StddevOverTime,
            "stdvar_over_time" => Self::StdvarOverTime,
            "quantile_over_time" => Self::QuantileOverTime,
            "rate_counter" => Self::RateCounter,
            _ => return None,
        })
    }

    /// Whether it reads unwrapped values (else it counts lines or bytes).
    /// `rate` and `absent_over_time` take either.
    pub fn needs_unwrap(self) -> Option<bool> {
        match self {
            Self::CountOverTime | Self::BytesOverTime | Self::BytesRate => Some(false),
            Self::Rate | Self::AbsentOverTime => None,
            _ => Some(true),
        }
    }
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
    /// Population standard deviation.
    Stddev,
    /// Population variance.
    Stdvar,
    /// The k largest series.
    Topk,
    /// The k smallest series.
    Bottomk,
    /// Series by value, ascending.
    Sort,
    /// Series by value, descending.
    SortDesc,
}

impl AggregateOp {
    /// The aggregation named `name`.
    pub fn named(name: &str) -> Option<Self> {
        Some(match name {
            "sum" => Self::Sum,
            "count" => Self::Count,
            "min" => Self::Min,
            "max" => Self::Max,
            "avg" => Self::Avg,
            "stddev" => Self::Stddev,
            "stdvar" => Self::Stdvar,
            // On one node the exact answer is as cheap as the estimate.
            "topk" | "approx_topk" => Self::Topk,
            "bottomk" => Self::Bottomk,
            "sort" => Self::Sort,
            "sort_desc" => Self::SortDesc,
            _ => return None,
        })
    }
}

/// `by (…)` or `without (…)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grouping {
    /// `without` rather than `by`.
    pub without: bool,
    /// The labels.
    pub labels: Vec<String>,
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// `or`
    Or,
    /// `and`
    And,
    /// `unless`
    Unless,
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

impl BinaryOp {
    /// Whether it is a comparison (`==` … `>=`).
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            Self::Eq | Self::Ne | Self::Lt | Self::Le | Self::Gt | Self::Ge
        )
    }

    /// Whether it is a set operation (`and`, `or`, `unless`).
    pub fn is_set(self) -> bool {
        matches!(self, Self::And | Self::Or | Self::Unless)
    }
}

/// What may follow a binary operator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BinaryModifier {
    /// `bool`: comparisons give 0 or 1 instead of filtering.
    pub return_bool: bool,
    /// `on (…)` / `ignoring (…)`.
    pub matching: Option<VectorMatching>,
}

/// How series of the two sides are paired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VectorMatching {
    /// `on` (match on these labels) rather than `ignoring` (all but these).
    pub on: bool,
    /// The labels.
    pub labels: Vec<String>,
    /// `group_left` / `group_right`: many-to-one matching.
    pub group: Option<GroupSide>,
}

/// Which side of a many-to-one match has the many.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupSide {
    /// `group_left (labels copied from the right)`.
    Left(Vec<String>),
    /// `group_right (labels copied from the left)`.
    Right(Vec<String>),
}

impl fmt::Display for RangeFunc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CountOverTime => "count_over_time",
            Self::Rate => "rate",
            Self::BytesOverTime => "bytes_over_time",
            Self::BytesRate => "bytes_rate",
            Self::AbsentOverTime => "absent_over_time",
            Self::SumOverTime => "sum_over_time",
            Self::AvgOverTime => "avg_over_time",
            Self::MinOverTime => "min_over_time",
            Self::MaxOverTime => "max_over_time",
            Self::FirstOverTime => "first_over_time",
            Self::LastOverTime => "last_over_time",
            Self::StddevOverTime => "stddev_over_time",
            Self::StdvarOverTime => "stdvar_over_time",
            Self::QuantileOverTime => "quantile_over_time",
            Self::RateCounter => "rate_counter",
        })
    }
}
