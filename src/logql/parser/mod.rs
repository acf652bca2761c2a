//! Recursive-descent parser from tokens to [`Expr`]: the metric grammar
//! here, log expressions and their stages in [`log`].

mod log;
#[cfg(test)]
mod tests;

use super::ParseError;
use super::ast::*;
use super::lexer::{Tok, Token, lex};

/// Parses a LogQL query.
pub fn parse(input: &str) -> Result<Expr, ParseError> {
    let mut p = Parser {
        toks: lex(input)?,
        pos: 0,
        depth: 0,
    };
    let node = p.expr(0)?;
    p.expect(&Tok::Eof, "end of query")?;
    Ok(match node {
        Node::Log(log) => {
            if log.unwrap.is_some() {
                return Err(ParseError {
                    line: 1,
                    col: 1,
                    message: "unwrap is only allowed inside a range aggregation, e.g. sum_over_time({app=\"web\"} | logfmt | unwrap latency [5m])".into(),
                });
            }
            Expr::Log(log)
        }
        Node::Metric(m) => Expr::Metric(m),
    })
}

enum Node {
    Log(LogExpr),
    Metric(MetricExpr),
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    /// How deep the tree being built is here: every recursion of the parser
    /// and every link of an operator chain counts, so neither parsing nor
    /// evaluating nor dropping a query can overflow the stack.
    depth: usize,
}

/// The deepest a query may nest (parentheses, function calls, operators,
/// label-filter `and`/`or`). Real queries stay under ten.
pub const MAX_DEPTH: usize = 100;

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].tok
    }

    fn peek_at(&self, ahead: usize) -> &Tok {
        &self.toks[(self.pos + ahead).min(self.toks.len() - 1)].tok
    }

    fn peek_word(&self, word: &str) -> bool {
        matches!(self.peek(), Tok::Ident(w) if w == word)
    }

    fn here(&self) -> &Token {
        &self.toks[self.pos]
    }

    fn next(&mut self) -> Token {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn error_at(&self, token: &Token, message: String) -> ParseError {
        ParseError {
            line: token.line,
            col: token.col,
            message,
        }
    }

    fn expected(&self, what: &str) -> ParseError {
        let here = self.here();
        self.error_at(
            here,
            format!("expected {what}, found {}", here.tok.describe()),
        )
    }

    /// Runs `parse` one level deeper, refusing past [`MAX_DEPTH`].
    fn nested<T>(
        &mut self,
        parse: impl FnOnce(&mut Self) -> Result<T, ParseError>,
    ) -> Result<T, ParseError> {
        self.deeper(1)?;
        self.depth += 1;
        let result = parse(self);
        self.depth -= 1;
        result
    }

    /// Fails if `more` levels below here would pass [`MAX_DEPTH`].
    fn deeper(&self, more: usize) -> Result<(), ParseError> {
        if self.depth + more > MAX_DEPTH {
            return Err(self.error_at(
                self.here(),
                format!(
                    "the query nests more than {MAX_DEPTH} levels deep (parentheses, function calls, operators or and/or); write it flatter"
                ),
            ));
        }
        Ok(())
    }

    fn expect(&mut self, tok: &Tok, what: &str) -> Result<Token, ParseError> {
        if self.peek() == tok {
            Ok(self.next())
        } else {
            Err(self.expected(what))
        }
    }

    fn string(&mut self, what: &str) -> Result<(String, Token), ParseError> {
        match self.peek().clone() {
            Tok::Str(s) => Ok((s, self.next())),
            _ => Err(self.expected(what)),
        }
    }

    fn ident(&mut self, what: &str) -> Result<(String, Token), ParseError> {
        match self.peek().clone() {
            Tok::Ident(s) => Ok((s, self.next())),
            _ => Err(self.expected(what)),
        }
    }

    fn number(&mut self, what: &str) -> Result<f64, ParseError> {
        let negative = if self.peek() == &Tok::Minus {
            self.next();
            true
        } else {
            false
        };
        match self.peek().clone() {
            Tok::Num(n) => {
                self.next();
                Ok(if negative { -n } else { n })
            }
            _ => Err(self.expected(what)),
        }
    }

    /// The operator here and its precedence (PromQL's: `or` lowest, `^`
    /// highest).
    fn binary_op(&self) -> Option<(BinaryOp, u8)> {
        Some(match self.peek() {
            Tok::Ident(w) if w == "or" => (BinaryOp::Or, 1),
            Tok::Ident(w) if w == "and" => (BinaryOp::And, 2),
            Tok::Ident(w) if w == "unless" => (BinaryOp::Unless, 2),
            Tok::EqEq => (BinaryOp::Eq, 3),
            Tok::Neq => (BinaryOp::Ne, 3),
            Tok::Lt => (BinaryOp::Lt, 3),
            Tok::Le => (BinaryOp::Le, 3),
            Tok::Gt => (BinaryOp::Gt, 3),
            Tok::Ge => (BinaryOp::Ge, 3),
            Tok::Plus => (BinaryOp::Add, 4),
            Tok::Minus => (BinaryOp::Sub, 4),
            Tok::Star => (BinaryOp::Mul, 5),
            Tok::Slash => (BinaryOp::Div, 5),
            Tok::Percent => (BinaryOp::Mod, 5),
            Tok::Caret => (BinaryOp::Pow, 6),
            _ => return None,
        })
    }

    fn expr(&mut self, min_prec: u8) -> Result<Node, ParseError> {
        self.nested(|p| p.expr_here(min_prec))
    }

    fn expr_here(&mut self, min_prec: u8) -> Result<Node, ParseError> {
        let mut lhs = self.primary()?;
        // A chain `a + b + c …` grows the tree one level per operator.
        let mut chain = 0;
        while let Some((op, prec)) = self.binary_op() {
            if prec < min_prec {
                break;
            }
            chain += 1;
            self.deeper(chain)?;
            let op_token = self.next();
            let modifier = self.modifier(op, &op_token)?;
            // `^` is right-associative, the rest left.
            let rhs = self.expr(if op == BinaryOp::Pow { prec } else { prec + 1 })?;
            let (Node::Metric(l), Node::Metric(r)) = (lhs, rhs) else {
                return Err(self.error_at(
                    &op_token,
                    "both sides of an operator must be metric queries, not log queries".into(),
                ));
            };
            if op.is_set()
                && (matches!(l, MetricExpr::Number(_)) || matches!(r, MetricExpr::Number(_)))
            {
                return Err(self.error_at(
                    &op_token,
                    format!(
                        "set operator {} not allowed in binary scalar expression",
                        op_name(op)
                    ),
                ));
            }
            lhs = Node::Metric(MetricExpr::Binary {
                op,
                modifier,
                lhs: Box::new(l),
                rhs: Box::new(r),
            });
        }
        Ok(lhs)
    }

    /// `bool`, `on (…)` / `ignoring (…)`, `group_left (…)` / `group_right (…)`.
    fn modifier(&mut self, op: BinaryOp, op_token: &Token) -> Result<BinaryModifier, ParseError> {
        let mut modifier = BinaryModifier::default();
        if self.peek_word("bool") {
            if !op.is_comparison() {
                return Err(self.error_at(
                    self.here(),
                    "bool modifier can only be used on comparison operators".into(),
                ));
            }
            self.next();
            modifier.return_bool = true;
        }
        let on = match self.peek() {
            Tok::Ident(w) if w == "on" => true,
            Tok::Ident(w) if w == "ignoring" => false,
            _ => return Ok(modifier),
        };
        self.next();
        let labels = self.label_list()?;
        let group = match self.peek() {
            Tok::Ident(w) if w == "group_left" || w == "group_right" => {
                let left = w == "group_left";
                if op.is_set() {
                    return Err(self.error_at(
                        op_token,
                        format!("no grouping allowed for \"{}\" operation", op_name(op)),
                    ));
                }
                self.next();
                let extra = if self.peek() == &Tok::LParen {
                    self.label_list()?
                } else {
                    Vec::new()
                };
                Some(if left {
                    GroupSide::Left(extra)
                } else {
                    GroupSide::Right(extra)
                })
            }
            _ => None,
        };
        modifier.matching = Some(VectorMatching { on, labels, group });
        Ok(modifier)
    }

    fn primary(&mut self) -> Result<Node, ParseError> {
        let token = self.here().clone();
        match token.tok.clone() {
            Tok::LBrace => Ok(Node::Log(self.log_expr()?)),
            Tok::LParen => {
                self.next();
                let inner = self.expr(0)?;
                self.expect(&Tok::RParen, "')'")?;
                Ok(inner)
            }
            Tok::Num(n) => {
                self.next();
                Ok(Node::Metric(MetricExpr::Number(n)))
            }
            Tok::Minus | Tok::Plus => {
                self.next();
                let negative = token.tok == Tok::Minus;
                if let Tok::Num(n) = self.peek().clone() {
                    self.next();
                    return Ok(Node::Metric(MetricExpr::Number(if negative {
                        -n
                    } else {
                        n
                    })));
                }
                match self.nested(|p| p.primary())? {
                    Node::Metric(m) if negative => Ok(Node::Metric(MetricExpr::Binary {
                        op: BinaryOp::Mul,
                        modifier: BinaryModifier::default(),
                        lhs: Box::new(m),
                        rhs: Box::new(MetricExpr::Number(-1.0)),
                    })),
                    Node::Metric(m) => Ok(Node::Metric(m)),
                    Node::Log(_) => Err(self.error_at(
                        &token,
                        "a sign applies to numbers and metric queries, not log queries".into(),
                    )),
                }
            }
            Tok::Ident(name) => self.function(&name, &token),
            _ => {
                Err(self
                    .expected("a query: a selector like {app=\"web\"}, a number, or a function"))
            }
        }
    }

    fn metric_arg(&mut self, name: &str, token: &Token) -> Result<MetricExpr, ParseError> {
        match self.expr(0)? {
            Node::Metric(m) => Ok(m),
            Node::Log(_) => Err(self.error_at(
                token,
                format!(
                    "{name}(...) takes a metric query, e.g. {name}(count_over_time({{…}}[5m]))"
                ),
            )),
        }
    }

    fn function(&mut self, name: &str, token: &Token) -> Result<Node, ParseError> {
        self.next();
        if name == "vector" {
            self.expect(&Tok::LParen, "'(' after vector")?;
            let n = self.number("a number in vector(...)")?;
            self.expect(&Tok::RParen, "')'")?;
            return Ok(Node::Metric(MetricExpr::Vector(n)));
        }
        if name == "label_replace" {
            return self.label_replace(token);
        }
        if let Some(func) = RangeFunc::named(name) {
            return self.range_function(func, name, token);
        }
        if let Some(op) = AggregateOp::named(name) {
            let mut grouping = self.grouping()?;
            self.expect(&Tok::LParen, &format!("'(' after {name}"))?;
            let param = if matches!(op, AggregateOp::Topk | AggregateOp::Bottomk) {
                let k = self.number(&format!("a number k in {name}(k, ...)"))?;
                if k < 1.0 || k.fract() != 0.0 {
                    return Err(self.error_at(
                        token,
                        format!("{name}: k must be a positive integer, not {k}"),
                    ));
                }
                self.expect(&Tok::Comma, "',' after k")?;
                Some(k)
            } else {
                None
            };
            let inner = self.metric_arg(name, token)?;
            self.expect(&Tok::RParen, "')'")?;
            if grouping.is_none() {
                grouping = self.grouping()?;
            }
            if matches!(op, AggregateOp::Sort | AggregateOp::SortDesc) && grouping.is_some() {
                return Err(self.error_at(token, format!("{name} does not take by or without")));
            }
            return Ok(Node::Metric(MetricExpr::Aggregate {
                op,
                grouping,
                param,
                inner: Box::new(inner),
            }));
        }
        let hint = match name {
            "count_values" | "absent" | "histogram_quantile" | "irate" | "increase" | "delta" => {
                format!("'{name}' is a PromQL function that LogQL does not have")
            }
            _ => format!("unknown function or keyword '{name}'"),
        };
        Err(self.error_at(token, hint))
    }

    fn label_replace(&mut self, token: &Token) -> Result<Node, ParseError> {
        self.expect(&Tok::LParen, "'(' after label_replace")?;
        let inner = self.metric_arg("label_replace", token)?;
        let mut strings = Vec::new();
        for what in ["destination label", "replacement", "source label", "regex"] {
            self.expect(&Tok::Comma, "','")?;
            strings.push(self.string(&format!("the {what} as a quoted string"))?);
        }
        self.expect(&Tok::RParen, "')'")?;
        let (dst, dst_at) = &strings[0];
        if !super::convert::is_label_name(dst) {
            return Err(self.error_at(
                dst_at,
                format!("invalid destination label name in label_replace(): {dst}"),
            ));
        }
        let (pattern, at) = &strings[3];
        let regex = regex::RegexBuilder::new(&format!("^(?s:{pattern})$"))
            .size_limit(1 << 20)
            .build()
            .map_err(|e| {
                self.error_at(
                    at,
                    format!("invalid regular expression in label_replace(): {e}"),
                )
            })?;
        Ok(Node::Metric(MetricExpr::LabelReplace {
            inner: Box::new(inner),
            dst: dst.clone(),
            replacement: strings[1].0.clone(),
            src: strings[2].0.clone(),
            regex,
        }))
    }

    fn range_function(
        &mut self,
        func: RangeFunc,
        name: &str,
        token: &Token,
    ) -> Result<Node, ParseError> {
        self.expect(&Tok::LParen, &format!("'(' after {name}"))?;
        let param = if func == RangeFunc::QuantileOverTime {
            let q = self.number("a quantile like 0.99 in quantile_over_time(0.99, ...)")?;
            self.expect(&Tok::Comma, "',' after the quantile")?;
            Some(q)
        } else {
            None
        };
        let (log, range, offset) = self.log_range(name)?;
        self.expect(&Tok::RParen, "')'")?;
        let grouping = self.grouping()?;
        match (func.needs_unwrap(), log.unwrap.is_some()) {
            (Some(true), false) => {
                return Err(self.error_at(token, format!("invalid aggregation {name} without unwrap; add e.g. | unwrap latency before the range")));
            }
            (Some(false), true) => {
                return Err(self.error_at(token, format!("invalid aggregation {name} with unwrap")));
            }
            _ => {}
        }
        let groupable = log.unwrap.is_some()
            && !matches!(
                func,
                RangeFunc::SumOverTime
                    | RangeFunc::AbsentOverTime
                    | RangeFunc::Rate
                    | RangeFunc::RateCounter
            );
        if grouping.is_some() && !groupable {
            return Err(self.error_at(
                token,
                format!("grouping not allowed for {name} aggregation"),
            ));
        }
        Ok(Node::Metric(MetricExpr::Range(Box::new(RangeExpr {
            func,
            log,
            range,
            offset,
            grouping,
            param,
        }))))
    }

    /// `{…} | … [5m] offset 1h`, `{…}[5m] | …`, or either in parentheses.
    fn log_range(&mut self, name: &str) -> Result<(LogExpr, i64, i64), ParseError> {
        if self.peek() == &Tok::LParen {
            self.next();
            let inner = self.nested(|p| p.log_range_or_log(name))?;
            self.expect(&Tok::RParen, "')'")?;
            return match inner {
                (log, Some((range, offset))) => Ok((log, range, offset)),
                (log, None) => {
                    let (range, offset) = self.range_and_offset()?;
                    let log = self.more_stages(log)?;
                    Ok((log, range, offset))
                }
            };
        }
        match self.log_range_or_log(name)? {
            (log, Some((range, offset))) => Ok((log, range, offset)),
            (_, None) => Err(self.expected("a range like [5m] after the log query")),
        }
    }

    fn log_range_or_log(
        &mut self,
        name: &str,
    ) -> Result<(LogExpr, Option<(i64, i64)>), ParseError> {
        if self.peek() != &Tok::LBrace {
            return Err(self.expected(&format!("a log query like {{app=\"web\"}} inside {name}")));
        }
        let log = self.log_expr()?;
        if self.peek() != &Tok::LBracket {
            return Ok((log, None));
        }
        let (range, offset) = self.range_and_offset()?;
        let log = self.more_stages(log)?;
        Ok((log, Some((range, offset))))
    }

    fn range_and_offset(&mut self) -> Result<(i64, i64), ParseError> {
        self.expect(&Tok::LBracket, "a range like [5m] after the log query")?;
        let range = match self.peek().clone() {
            Tok::Duration(d) if d > 0 => {
                self.next();
                d
            }
            _ => return Err(self.expected("a duration like 5m")),
        };
        self.expect(&Tok::RBracket, "']'")?;
        let mut offset = 0;
        if self.peek_word("offset") {
            self.next();
            let negative = if self.peek() == &Tok::Minus {
                self.next();
                true
            } else {
                false
            };
            offset = match self.peek().clone() {
                Tok::Duration(d) => {
                    self.next();
                    if negative { -d } else { d }
                }
                Tok::Num(0.0) => {
                    self.next();
                    0
                }
                _ => return Err(self.expected("a duration like 1h after offset")),
            };
        }
        Ok((range, offset))
    }

    /// Stages written after the range (`{…}[5m] | json`).
    fn more_stages(&mut self, mut log: LogExpr) -> Result<LogExpr, ParseError> {
        if log.unwrap.is_none()
            && matches!(
                self.peek(),
                Tok::Pipe
                    | Tok::PipeEq
                    | Tok::Neq
                    | Tok::PipeTilde
                    | Tok::NotTilde
                    | Tok::PipeGt
                    | Tok::NotGt
            )
        {
            let (stages, unwrap) = self.stages()?;
            log.stages.extend(stages);
            log.unwrap = unwrap;
        }
        Ok(log)
    }

    fn label_list(&mut self) -> Result<Vec<String>, ParseError> {
        self.expect(&Tok::LParen, "'(' and a list of labels")?;
        let mut labels = Vec::new();
        while let Tok::Ident(label) = self.peek().clone() {
            self.next();
            labels.push(label);
            if self.peek() == &Tok::Comma {
                self.next();
            } else {
                break;
            }
        }
        self.expect(&Tok::RParen, "a label name or ')'")?;
        Ok(labels)
    }

    fn grouping(&mut self) -> Result<Option<Grouping>, ParseError> {
        let without = match self.peek() {
            Tok::Ident(w) if w == "by" => false,
            Tok::Ident(w) if w == "without" => true,
            _ => return Ok(None),
        };
        self.next();
        let labels = self.label_list()?;
        Ok(Some(Grouping { without, labels }))
    }
}

fn op_name(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Or => "or",
        BinaryOp::And => "and",
        BinaryOp::Unless => "unless",
        _ => "?",
    }
}
