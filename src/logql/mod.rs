//! LogQL, as Loki 3.x has it: stream selectors; line filters (`|=`, `!=`,
//! `|~`, `!~`, `|>`, `!>`, `or` branches, `ip()`); the `json`, `logfmt`,
//! `regexp`, `pattern` and `unpack` parsers; label filters; `line_format`
//! and `label_format` with Go templates; `drop`, `keep`, `decolorize`;
//! `unwrap`; every range aggregation, vector aggregation, binary and set
//! operator with Loki's semantics.
//!
//! The parts: [`lexer`] and [`parser`] build an [`ast`]; [`pipeline`] runs
//! a log query's stages on entries the store returns (leading line filters
//! go to the store); [`metric`] evaluates metric queries on a grid of steps.

mod ast;
pub(crate) mod convert;
mod ip;
mod lexer;
pub mod metric;
mod parser;
mod pattern;
pub mod pipeline;
pub mod template;

pub use ast::*;
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
