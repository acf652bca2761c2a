//! Recursive-descent parser from tokens to [`Expr`].

use super::lexer::{Tok, Token, lex};
use super::*;
use crate::log_database::query::{LineFilter, MatchOp, Matcher, validate_selector};

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
        Node::Log(log) => Expr::Log(log),
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

const RANGE_UNSUPPORTED: &[&str] = &[
    "sum_over_time",
    "avg_over_time",
    "max_over_time",
    "min_over_time",
    "first_over_time",
    "last_over_time",
    "stdvar_over_time",
    "stddev_over_time",
    "quantile_over_time",
    "absent_over_time",
    "rate_counter",
];
const AGG_UNSUPPORTED: &[&str] = &[
    "bottomk",
    "stddev",
    "stdvar",
    "count_values",
    "sort",
    "sort_desc",
    "label_replace",
    "approx_topk",
];
const STAGE_UNSUPPORTED: &[&str] = &[
    "regexp",
    "pattern",
    "unpack",
    "label_format",
    "drop",
    "keep",
    "decolorize",
    "unwrap",
];

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].tok
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

    fn unsupported(&self, token: &Token, what: &str) -> ParseError {
        self.error_at(
            token,
            format!("unsupported: {what} is not implemented by monitoring-rs"),
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

    fn binary_op(&self) -> Option<(BinaryOp, u8)> {
        Some(match self.peek() {
            Tok::EqEq => (BinaryOp::Eq, 1),
            Tok::Neq => (BinaryOp::Ne, 1),
            Tok::Lt => (BinaryOp::Lt, 1),
            Tok::Le => (BinaryOp::Le, 1),
            Tok::Gt => (BinaryOp::Gt, 1),
            Tok::Ge => (BinaryOp::Ge, 1),
            Tok::Plus => (BinaryOp::Add, 2),
            Tok::Minus => (BinaryOp::Sub, 2),
            Tok::Star => (BinaryOp::Mul, 3),
            Tok::Slash => (BinaryOp::Div, 3),
            Tok::Percent => (BinaryOp::Mod, 3),
            Tok::Caret => (BinaryOp::Pow, 4),
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
        loop {
            if let Tok::Ident(word) = self.peek()
                && matches!(word.as_str(), "and" | "or" | "unless")
            {
                let t = self.here().clone();
                return Err(self.unsupported(&t, &format!("the set operator '{word}'")));
            }
            let Some((op, prec)) = self.binary_op() else {
                break;
            };
            if prec < min_prec {
                break;
            }
            chain += 1;
            self.deeper(chain)?;
            let op_token = self.next();
            if let Tok::Ident(word) = self.peek()
                && word == "bool"
            {
                let t = self.here().clone();
                return Err(self.unsupported(&t, "the 'bool' modifier"));
            }
            // `^` is right-associative, the rest left.
            let rhs = self.expr(if op == BinaryOp::Pow { prec } else { prec + 1 })?;
            let (Node::Metric(l), Node::Metric(r)) = (lhs, rhs) else {
                return Err(self.error_at(
                    &op_token,
                    "both sides of an operator must be metric queries, not log queries".into(),
                ));
            };
            lhs = Node::Metric(MetricExpr::Binary {
                op,
                lhs: Box::new(l),
                rhs: Box::new(r),
            });
        }
        Ok(lhs)
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
            Tok::Minus => {
                self.next();
                match self.peek().clone() {
                    Tok::Num(n) => {
                        self.next();
                        Ok(Node::Metric(MetricExpr::Number(-n)))
                    }
                    _ => Err(self.expected("a number after '-'")),
                }
            }
            Tok::Ident(name) => self.function(&name, &token),
            _ => {
                Err(self
                    .expected("a query: a selector like {app=\"web\"}, a number, or a function"))
            }
        }
    }

    fn function(&mut self, name: &str, token: &Token) -> Result<Node, ParseError> {
        let range = match name {
            "count_over_time" => Some(RangeFunc::CountOverTime),
            "rate" => Some(RangeFunc::Rate),
            "bytes_over_time" => Some(RangeFunc::BytesOverTime),
            "bytes_rate" => Some(RangeFunc::BytesRate),
            _ => None,
        };
        let agg = match name {
            "sum" => Some(AggregateOp::Sum),
            "count" => Some(AggregateOp::Count),
            "min" => Some(AggregateOp::Min),
            "max" => Some(AggregateOp::Max),
            "avg" => Some(AggregateOp::Avg),
            "topk" => Some(AggregateOp::Topk),
            _ => None,
        };
        self.next();
        if name == "vector" {
            self.expect(&Tok::LParen, "'(' after vector")?;
            let n = match self.peek().clone() {
                Tok::Num(n) => {
                    self.next();
                    n
                }
                _ => return Err(self.expected("a number in vector(...)")),
            };
            self.expect(&Tok::RParen, "')'")?;
            return Ok(Node::Metric(MetricExpr::Vector(n)));
        }
        if let Some(func) = range {
            self.expect(&Tok::LParen, &format!("'(' after {name}"))?;
            if self.peek() != &Tok::LBrace {
                return Err(
                    self.expected(&format!("a log query like {{app=\"web\"}} inside {name}"))
                );
            }
            let log = self.log_expr()?;
            self.expect(&Tok::LBracket, "a range like [5m] after the log query")?;
            let range = match self.peek().clone() {
                Tok::Duration(d) if d > 0 => {
                    self.next();
                    d
                }
                _ => return Err(self.expected("a duration like 5m")),
            };
            self.expect(&Tok::RBracket, "']'")?;
            if let Tok::Ident(word) = self.peek()
                && word == "offset"
            {
                let t = self.here().clone();
                return Err(self.unsupported(&t, "'offset'"));
            }
            self.expect(&Tok::RParen, "')'")?;
            return Ok(Node::Metric(MetricExpr::Range { func, log, range }));
        }
        if let Some(op) = agg {
            let mut grouping = self.grouping()?;
            self.expect(&Tok::LParen, &format!("'(' after {name}"))?;
            let param = if op == AggregateOp::Topk {
                let k = match self.peek().clone() {
                    Tok::Num(k) if k >= 1.0 => {
                        self.next();
                        k
                    }
                    _ => return Err(self.expected("a positive number k in topk(k, ...)")),
                };
                self.expect(&Tok::Comma, "',' after k")?;
                Some(k)
            } else {
                None
            };
            let inner = match self.expr(0)? {
                Node::Metric(m) => m,
                Node::Log(_) => {
                    return Err(self.error_at(
                        token,
                        format!("{name}(...) takes a metric query, e.g. {name}(count_over_time({{…}}[5m]))"),
                    ));
                }
            };
            self.expect(&Tok::RParen, "')'")?;
            if grouping.is_none() {
                grouping = self.grouping()?;
            }
            return Ok(Node::Metric(MetricExpr::Aggregate {
                op,
                grouping,
                param,
                inner: Box::new(inner),
            }));
        }
        if RANGE_UNSUPPORTED.contains(&name) || AGG_UNSUPPORTED.contains(&name) {
            return Err(self.unsupported(token, &format!("the function '{name}'")));
        }
        Err(self.error_at(token, format!("unknown function or keyword '{name}'")))
    }

    fn grouping(&mut self) -> Result<Option<Grouping>, ParseError> {
        let without = match self.peek() {
            Tok::Ident(w) if w == "by" => false,
            Tok::Ident(w) if w == "without" => true,
            _ => return Ok(None),
        };
        self.next();
        self.expect(&Tok::LParen, "'(' after by/without")?;
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
        Ok(Some(Grouping { without, labels }))
    }

    fn log_expr(&mut self) -> Result<LogExpr, ParseError> {
        let open = self.expect(&Tok::LBrace, "'{'")?;
        let mut selector = Vec::new();
        loop {
            let (name, _) = self.ident("a label name")?;
            let op = match self.peek() {
                Tok::Eq => MatchOp::Equal,
                Tok::Neq => MatchOp::NotEqual,
                Tok::EqTilde => MatchOp::Regex,
                Tok::NotTilde => MatchOp::NotRegex,
                _ => return Err(self.expected("'=', '!=', '=~' or '!~'")),
            };
            self.next();
            let (value, at) = self.string("a quoted value")?;
            selector.push(
                Matcher::new(&name, op, &value).map_err(|e| self.error_at(&at, e.to_string()))?,
            );
            match self.peek() {
                Tok::Comma => {
                    self.next();
                }
                Tok::RBrace => {
                    self.next();
                    break;
                }
                _ => return Err(self.expected("',' or '}'")),
            }
        }
        validate_selector(&selector).map_err(|e| self.error_at(&open, e.to_string()))?;
        let mut stages = Vec::new();
        loop {
            let token = self.here().clone();
            let line = |s: &Self,
                        negate: bool,
                        regex: bool,
                        value: String,
                        at: &Token|
             -> Result<Stage, ParseError> {
                Ok(Stage::Line(Box::new(if regex {
                    LineFilter::regex(&value, negate).map_err(|e| s.error_at(at, e.to_string()))?
                } else {
                    LineFilter::contains(value.as_bytes(), negate)
                })))
            };
            let stage = match token.tok {
                Tok::PipeEq | Tok::Neq | Tok::PipeTilde | Tok::NotTilde => {
                    self.next();
                    let (value, at) = self.string("a quoted string after the line filter")?;
                    let negate = matches!(token.tok, Tok::Neq | Tok::NotTilde);
                    let regex = matches!(token.tok, Tok::PipeTilde | Tok::NotTilde);
                    if let Tok::Ident(word) = self.peek()
                        && word == "or"
                    {
                        let t = self.here().clone();
                        return Err(self.unsupported(&t, "'or' inside a line filter"));
                    }
                    line(self, negate, regex, value, &at)?
                }
                Tok::Pipe => {
                    self.next();
                    let here = self.here().clone();
                    match here.tok.clone() {
                        Tok::Ident(word) if word == "json" => {
                            self.next();
                            Stage::Json
                        }
                        Tok::Ident(word) if word == "logfmt" => {
                            self.next();
                            Stage::Logfmt
                        }
                        Tok::Ident(word) if word == "line_format" => {
                            self.next();
                            let (text, at) = self.string("a quoted template after line_format")?;
                            Stage::LineFormat(template(&text).map_err(|m| self.error_at(&at, m))?)
                        }
                        Tok::Ident(word) if STAGE_UNSUPPORTED.contains(&word.as_str()) => {
                            return Err(self.unsupported(&here, &format!("the '{word}' stage")));
                        }
                        Tok::Ident(_) | Tok::LParen => Stage::Labels(self.predicate()?),
                        Tok::Eq => {
                            return Err(self.error_at(&here, "expected a parser or label filter after '|'; for a line filter write '|='".into()));
                        }
                        _ => {
                            return Err(self.expected(
                                "json, logfmt, line_format or a label filter after '|'",
                            ));
                        }
                    }
                }
                _ => break,
            };
            stages.push(stage);
        }
        Ok(LogExpr { selector, stages })
    }

    fn predicate(&mut self) -> Result<LabelPredicate, ParseError> {
        self.nested(|p| {
            let mut lhs = p.conjunction()?;
            let mut chain = 0;
            while matches!(p.peek(), Tok::Ident(w) if w == "or") {
                chain += 1;
                p.deeper(chain)?;
                p.next();
                let rhs = p.conjunction()?;
                lhs = LabelPredicate::Or(Box::new(lhs), Box::new(rhs));
            }
            Ok(lhs)
        })
    }

    fn conjunction(&mut self) -> Result<LabelPredicate, ParseError> {
        let mut lhs = self.atom()?;
        let mut chain = 0;
        while matches!(self.peek(), Tok::Comma)
            || matches!(self.peek(), Tok::Ident(w) if w == "and")
        {
            chain += 1;
            self.deeper(chain)?;
            self.next();
            let rhs = self.atom()?;
            lhs = LabelPredicate::And(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn atom(&mut self) -> Result<LabelPredicate, ParseError> {
        if self.peek() == &Tok::LParen {
            self.next();
            let inner = self.predicate()?;
            self.expect(&Tok::RParen, "')'")?;
            return Ok(inner);
        }
        let (name, _) = self.ident("a label name")?;
        let op_token = self.next();
        let literal = self.here().clone();
        let string_op = match op_token.tok {
            Tok::Eq | Tok::EqEq => Some(MatchOp::Equal),
            Tok::Neq => Some(MatchOp::NotEqual),
            Tok::EqTilde => Some(MatchOp::Regex),
            Tok::NotTilde => Some(MatchOp::NotRegex),
            _ => None,
        };
        let compare_op = match op_token.tok {
            Tok::Eq | Tok::EqEq => Some(CompareOp::Eq),
            Tok::Neq => Some(CompareOp::Ne),
            Tok::Lt => Some(CompareOp::Lt),
            Tok::Le => Some(CompareOp::Le),
            Tok::Gt => Some(CompareOp::Gt),
            Tok::Ge => Some(CompareOp::Ge),
            _ => None,
        };
        if string_op.is_none() && compare_op.is_none() {
            return Err(self.error_at(
                &op_token,
                format!(
                    "expected a comparison after '{name}', found {}",
                    op_token.tok.describe()
                ),
            ));
        }
        let (value, kind) = match literal.tok.clone() {
            Tok::Str(s) => {
                let Some(op) = string_op else {
                    return Err(self.error_at(&literal, format!("'{name}' is compared as a number here; write a number, duration or size")));
                };
                self.next();
                let m = Matcher::new(&name, op, &s)
                    .map_err(|e| self.error_at(&literal, e.to_string()))?;
                return Ok(LabelPredicate::Match(m));
            }
            Tok::Num(n) => (n, ValueKind::Number),
            Tok::Duration(d) => (d as f64 / 1e9, ValueKind::Duration),
            Tok::Bytes(b) => (b as f64, ValueKind::Bytes),
            Tok::Ident(word) if word == "ip" => {
                return Err(self.unsupported(&literal, "the ip() label filter"));
            }
            _ => return Err(self.expected("a quoted value, number, duration or size")),
        };
        let Some(op) = compare_op else {
            return Err(self.error_at(&op_token, "regex matches take a quoted string".into()));
        };
        self.next();
        Ok(LabelPredicate::Compare {
            name,
            op,
            value,
            kind,
        })
    }
}

/// Parses a `line_format` template: text with `{{ .label }}` and `{{ __line__ }}`.
fn template(text: &str) -> Result<Template, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            parts.push(TemplatePart::Text(rest[..open].to_owned()));
        }
        let close = rest[open..]
            .find("}}")
            .ok_or_else(|| "unclosed '{{' in line_format".to_owned())?;
        let inner = rest[open + 2..open + close].trim();
        if inner == "__line__" {
            parts.push(TemplatePart::Line);
        } else if let Some(label) = inner.strip_prefix('.')
            && !label.is_empty()
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            parts.push(TemplatePart::Label(label.to_owned()));
        } else {
            return Err(format!(
                "unsupported: line_format supports {{{{ .label }}}} and {{{{ __line__ }}}}, not {{{{ {inner} }}}}"
            ));
        }
        rest = &rest[open + close + 2..];
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Text(rest.to_owned()));
    }
    Ok(Template(parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(q: &str) -> Expr {
        parse(q).unwrap_or_else(|e| panic!("{q}: {e}"))
    }

    fn err(q: &str) -> String {
        match parse(q) {
            Ok(e) => panic!("{q} parsed as {e:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// Every construct that nests, `n` deep.
    fn deep(n: usize) -> Vec<String> {
        let range = r#"count_over_time({app="web"}[1m])"#;
        vec![
            format!("{}{range}{}", "(".repeat(n), ")".repeat(n)),
            format!("{}{range}{}", "sum(".repeat(n), ")".repeat(n)),
            format!("{}{range}{}", "sum by (app) (".repeat(n), ")".repeat(n)),
            format!("{}{range}{}", "topk(1, ".repeat(n), ")".repeat(n)),
            format!("{range}{}", " + 1".repeat(n)),
            format!("{}1{}", "(1 + ".repeat(n), ")".repeat(n)),
            format!("{}1", "2 ^ ".repeat(n)),
            format!(
                r#"{{app="web"}} | json | {}a="1"{}"#,
                "(".repeat(n),
                ")".repeat(n)
            ),
            format!(
                r#"{{app="web"}} | json | a="1"{}"#,
                r#" and a="1""#.repeat(n)
            ),
            format!(
                r#"{{app="web"}} | json | a="1"{}"#,
                r#" or a="1""#.repeat(n)
            ),
            format!(r#"{{app="web"}} | json | a="1"{}"#, r#", a="1""#.repeat(n)),
        ]
    }

    #[test]
    fn nesting_is_bounded_with_a_clear_error() {
        // Shallow enough: parses.
        for q in deep(20) {
            ok(&q);
        }
        // On a tokio worker's stack (2 MiB), in a debug build: no overflow.
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                for n in [MAX_DEPTH + 1, 2_000, 20_000, 100_000] {
                    for q in deep(n) {
                        let e = err(&q);
                        assert!(e.contains("nests more than 100 levels"), "{e}");
                    }
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn valid_queries() {
        for q in [
            r#"{namespace="default"}"#,
            r#"{namespace="default", app=~"web.*"} |= "error" != `timeout` |~ "5\\d\\d" !~ "(?i)health""#,
            r#"{app="web"} | json | level="error""#,
            r#"{app="web"} | logfmt | status >= 500 and took > 250ms or size > 1MB"#,
            r#"{app="web"} | json | (level="error" or level="warn"), status!=404"#,
            r#"{app="web"} | json | line_format "{{.level}}: {{ .msg }} ({{__line__}})""#,
            r#"count_over_time({app="web"}[5m])"#,
            r#"sum by (level) (count_over_time({app="web"} | json [1m]))"#,
            r#"sum(rate({app="web"} |= "err" [30s])) by (pod_name)"#,
            r#"topk(3, sum by (app) (bytes_rate({namespace=~".+"}[5m])))"#,
            r#"avg without (pod_name) (bytes_over_time({app="x"}[1h]))"#,
            "vector(1)+vector(1)",
            "1 + 2 * 3 ^ 2",
            "-1.5",
            r#"sum(count_over_time({a="b"}[1m])) / 60 > 0.5"#,
        ] {
            ok(q);
        }
    }

    #[test]
    fn log_and_metric_shapes() {
        let Expr::Log(log) = ok(r#"{a="1"} |= "x" | json | b > 2"#) else {
            panic!()
        };
        assert_eq!(log.selector.len(), 1);
        assert_eq!(log.stages.len(), 3);
        let Expr::Metric(MetricExpr::Binary { op, .. }) = ok("1 + 2 * 3") else {
            panic!()
        };
        assert_eq!(op, BinaryOp::Add, "* binds tighter than +");
        let Expr::Metric(MetricExpr::Aggregate { grouping, .. }) =
            ok(r#"sum(count_over_time({a="1"}[1m])) by (x)"#)
        else {
            panic!()
        };
        assert_eq!(
            grouping,
            Some(Grouping {
                without: false,
                labels: vec!["x".into()]
            })
        );
    }

    #[test]
    fn errors_say_where_and_what() {
        assert_eq!(
            err(r#"{namespace="default", app "web"}"#),
            "parse error at 1:27: expected '=', '!=', '=~' or '!~', found string \"web\""
        );
        assert!(err(r#"{app=~".*"}"#).contains("at least one matcher"));
        assert!(err("{}").contains("expected a label name"));
        assert!(err(r#"{app="x"} |= "a" or "b""#).contains("unsupported"));
        assert!(
            err(r#"sum_over_time({a="b"} | unwrap x [1m])"#)
                .contains("unsupported: the function 'sum_over_time'")
        );
        assert!(err(r#"{a="b"} | regexp "(?P<x>.)""#).contains("unsupported: the 'regexp' stage"));
        assert!(err(r#"count_over_time({a="b"})"#).contains("expected a range like [5m]"));
        assert!(err(r#"{a="b"} + 1"#).contains("must be metric queries"));
        assert!(err(r#"{a=~"("}"#).contains("invalid regular expression"));
        assert!(err(r#"{a="b"} | line_format "{{ if .x }}""#).contains("line_format supports"));
        assert!(err("vector(1) and vector(1)").contains("set operator 'and'"));
        assert!(err(r#"{a="b""#).contains("expected ',' or '}'"));
        assert!(err("").contains("expected a query"));
        assert!(err("{a=\"b\"}\n  |= 5").starts_with("parse error at 2:6"));
    }

    proptest::proptest! {
        #[test]
        fn the_parser_never_panics(q in r#"[{}()\[\]|=!~<>+\-*/%^,a-z0-9 ."`_\\]{0,60}"#) {
            let _ = parse(&q);
        }

        /// Random mixes of every nestable construct, up to three times the
        /// limit: parsed (shallow), or refused with the nesting error.
        #[test]
        fn deep_random_nesting_parses_or_is_refused_never_overflows(
            layers in proptest::collection::vec(0usize..6, 0..300)
        ) {
            let mut q = r#"count_over_time({app="web"} | json | a="1" [1m])"#.to_string();
            for layer in &layers {
                q = match layer {
                    0 => format!("({q})"),
                    1 => format!("sum({q})"),
                    2 => format!("sum by (app) ({q})"),
                    3 => format!("topk(2, {q})"),
                    4 => format!("{q} + 1"),
                    _ => format!("1 * ({q})"),
                };
            }
            let depth = std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || parse(&q).map(|_| ()).map_err(|e| e.to_string()))
                .unwrap()
                .join()
                .unwrap();
            if let Err(e) = depth {
                proptest::prop_assert!(e.contains("nests more than"), "{}", e);
            }
        }

        #[test]
        fn mutations_of_valid_queries_never_panic(cut in 0usize..80, insert in "[{}()|=!~\"`\\[\\]]{0,3}") {
            let base = r#"sum by (level) (count_over_time({app=~"web.*"} |= "err" | json | status >= 500 [5m]))"#;
            let cut = cut.min(base.len());
            let q = format!("{}{}{}", &base[..cut], insert, &base[cut..]);
            let _ = parse(&q);
        }
    }
}
