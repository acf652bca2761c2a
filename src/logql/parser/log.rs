//! Log expressions: the stream selector and the pipeline stages.

use std::sync::Arc;

use super::Parser;
use crate::log_database::query::{LineFilter, LineTest, MatchOp, Matcher, validate_selector};
use crate::logql::ParseError;
use crate::logql::ast::*;
use crate::logql::convert::is_label_name;
use crate::logql::ip::IpMatcher;
use crate::logql::lexer::{Tok, Token};
use crate::logql::pattern::Pattern;
use crate::logql::template::Template;

/// `|> "<pattern>"` / `!> "<pattern>"`.
#[derive(Debug)]
struct PatternFilter {
    pattern: Pattern,
    /// The pattern as written: what tells this filter apart.
    source: String,
    negate: bool,
}

impl LineTest for PatternFilter {
    fn keeps(&self, line: &[u8]) -> bool {
        self.pattern.matches(line) != self.negate
    }

    fn may_match(&self, data: &[u8]) -> bool {
        self.negate
            || self
                .pattern
                .literals()
                .all(|lit| memchr::memmem::find(data, lit).is_some())
    }

    fn cache_key(&self) -> Option<String> {
        Some(format!("pattern {} {}", self.negate, self.source))
    }
}

/// `|= ip("…")` / `!= ip("…")`.
#[derive(Debug)]
struct IpFilter {
    ip: IpMatcher,
    /// The address, range or CIDR as written.
    source: String,
    negate: bool,
}

impl LineTest for IpFilter {
    fn keeps(&self, line: &[u8]) -> bool {
        self.ip.found_in(line) != self.negate
    }

    fn cache_key(&self) -> Option<String> {
        Some(format!("ip {} {}", self.negate, self.source))
    }
}

const STAGE_WORDS: &[&str] = &[
    "json",
    "logfmt",
    "regexp",
    "pattern",
    "unpack",
    "line_format",
    "label_format",
    "drop",
    "keep",
    "decolorize",
    "unwrap",
];

impl Parser {
    /// Whether the token after this one compares (`name=…`, `name > …`):
    /// then a stage word like `json` here is a label name.
    fn comparison_follows(&self) -> bool {
        matches!(
            self.peek_at(1),
            Tok::Eq
                | Tok::EqEq
                | Tok::Neq
                | Tok::EqTilde
                | Tok::NotTilde
                | Tok::Lt
                | Tok::Le
                | Tok::Gt
                | Tok::Ge
        )
    }

    pub(super) fn log_expr(&mut self) -> Result<LogExpr, ParseError> {
        let selector = self.selector()?;
        let (stages, unwrap) = self.stages()?;
        Ok(LogExpr {
            selector,
            stages,
            unwrap,
        })
    }

    fn selector(&mut self) -> Result<Vec<Matcher>, ParseError> {
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
        Ok(selector)
    }

    /// The pipeline after a selector, up to what is not a stage.
    pub(super) fn stages(&mut self) -> Result<(Vec<Stage>, Option<Unwrap>), ParseError> {
        let mut stages = Vec::new();
        loop {
            let token = self.here().clone();
            match token.tok {
                Tok::PipeEq
                | Tok::Neq
                | Tok::PipeTilde
                | Tok::NotTilde
                | Tok::PipeGt
                | Tok::NotGt => {
                    self.next();
                    stages.extend(self.line_filter(&token)?);
                }
                Tok::Pipe => {
                    self.next();
                    if self.peek_word("unwrap") {
                        let unwrap = self.unwrap()?;
                        return Ok((stages, Some(unwrap)));
                    }
                    stages.push(self.stage()?);
                }
                _ => return Ok((stages, None)),
            }
        }
    }

    /// One line filter and its `or` branches: a positive filter keeps a
    /// line any branch keeps; a negative one drops a line any branch
    /// matches (so it becomes one filter per branch).
    fn line_filter(&mut self, op: &Token) -> Result<Vec<Stage>, ParseError> {
        let negate = matches!(op.tok, Tok::Neq | Tok::NotTilde | Tok::NotGt);
        let mut branches = vec![self.line_filter_branch(op, negate)?];
        while self.peek_word("or") && matches!(self.peek_at(1), Tok::Str(_) | Tok::Ident(_)) {
            if let Tok::Ident(w) = self.peek_at(1)
                && w != "ip"
            {
                break;
            }
            self.next();
            branches.push(self.line_filter_branch(op, negate)?);
        }
        if negate || branches.len() == 1 {
            return Ok(branches
                .into_iter()
                .map(|f| Stage::Line(Box::new(f)))
                .collect());
        }
        Ok(vec![Stage::Line(Box::new(LineFilter::Any(branches)))])
    }

    fn line_filter_branch(&mut self, op: &Token, negate: bool) -> Result<LineFilter, ParseError> {
        if self.peek_word("ip") {
            if !matches!(op.tok, Tok::PipeEq | Tok::Neq) {
                return Err(self.error_at(op, "ip() works with |= and != only".into()));
            }
            let (ip, source) = self.ip_argument()?;
            return Ok(LineFilter::Test(Arc::new(IpFilter { ip, source, negate })));
        }
        let (value, at) = self.string("a quoted string after the line filter")?;
        Ok(match op.tok {
            Tok::PipeTilde | Tok::NotTilde => {
                LineFilter::regex(&value, negate).map_err(|e| self.error_at(&at, e.to_string()))?
            }
            Tok::PipeGt | Tok::NotGt => {
                let pattern =
                    Pattern::filter(&value).map_err(|e| self.error_at(&at, e.to_string()))?;
                LineFilter::Test(Arc::new(PatternFilter {
                    pattern,
                    source: value,
                    negate,
                }))
            }
            _ => LineFilter::contains(value.as_bytes(), negate),
        })
    }

    /// `ip("…")`: the matcher and the text it was made from.
    fn ip_argument(&mut self) -> Result<(IpMatcher, String), ParseError> {
        self.next();
        self.expect(&Tok::LParen, "'(' after ip")?;
        let (text, at) = self.string("an address, range or CIDR in quotes")?;
        self.expect(&Tok::RParen, "')'")?;
        let ip = IpMatcher::new(&text).map_err(|e| self.error_at(&at, e.to_string()))?;
        Ok((ip, text))
    }

    fn stage(&mut self) -> Result<Stage, ParseError> {
        let here = self.here().clone();
        let word = match &here.tok {
            Tok::Ident(w) => w.clone(),
            Tok::LParen => return Ok(Stage::Labels(self.predicate()?)),
            Tok::Eq => {
                return Err(self.error_at(
                    &here,
                    "expected a parser or label filter after '|'; for a line filter write '|='"
                        .into(),
                ));
            }
            _ => {
                return Err(self.expected("a parser (json, logfmt, pattern, regexp, unpack), a formatter (line_format, label_format), drop, keep, decolorize or a label filter after '|'"));
            }
        };
        let is_stage = STAGE_WORDS.contains(&word.as_str()) && !self.comparison_follows();
        if !is_stage {
            return Ok(Stage::Labels(self.predicate()?));
        }
        self.next();
        Ok(match word.as_str() {
            "json" => Stage::Json(self.json_fields()?),
            "logfmt" => Stage::Logfmt(self.logfmt_options()?),
            "regexp" => {
                let (text, at) = self.string("a quoted regular expression after regexp")?;
                Stage::Regexp(Arc::new(
                    named_regex(&text).map_err(|m| self.error_at(&at, m))?,
                ))
            }
            "pattern" => {
                let (text, at) = self.string("a quoted pattern after pattern")?;
                Stage::Pattern(Arc::new(
                    Pattern::parser(&text).map_err(|e| self.error_at(&at, e.to_string()))?,
                ))
            }
            "unpack" => Stage::Unpack,
            "decolorize" => Stage::Decolorize,
            "line_format" => {
                let (text, at) = self.string("a quoted template after line_format")?;
                Stage::LineFormat(Arc::new(
                    Template::parse(&text).map_err(|e| self.error_at(&at, e.to_string()))?,
                ))
            }
            "label_format" => Stage::LabelFormat(self.label_formats()?),
            "drop" => Stage::Drop(self.label_selections("drop")?),
            "keep" => Stage::Keep(self.label_selections("keep")?),
            _ => unreachable!("unwrap is handled by the caller"),
        })
    }

    fn json_fields(&mut self) -> Result<Vec<(String, JsonPath)>, ParseError> {
        let mut fields = Vec::new();
        while let Tok::Ident(name) = self.peek().clone() {
            if matches!(self.peek_at(1), Tok::Eq) {
                self.next();
                self.next();
                let (text, at) = self.string("a quoted JSON path like \"a.b[0]\"")?;
                let path = json_path(&text).map_err(|m| self.error_at(&at, m))?;
                fields.push((name, path));
            } else if matches!(
                self.peek_at(1),
                Tok::Comma | Tok::Pipe | Tok::Eof | Tok::RParen | Tok::LBracket
            ) || !matches!(self.peek_at(1), Tok::Ident(_))
            {
                // `| json servers` is `| json servers="servers"`.
                if matches!(
                    self.peek_at(1),
                    Tok::EqEq
                        | Tok::Neq
                        | Tok::Lt
                        | Tok::Gt
                        | Tok::Le
                        | Tok::Ge
                        | Tok::EqTilde
                        | Tok::NotTilde
                ) {
                    break;
                }
                self.next();
                fields.push((name.clone(), vec![PathStep::Field(name)]));
            } else {
                break;
            }
            if self.peek() == &Tok::Comma {
                self.next();
            } else {
                break;
            }
        }
        Ok(fields)
    }

    fn logfmt_options(&mut self) -> Result<LogfmtOptions, ParseError> {
        let mut options = LogfmtOptions::default();
        while let Tok::Flag(flag) = self.peek().clone() {
            match flag.as_str() {
                "strict" => options.strict = true,
                "keep-empty" => options.keep_empty = true,
                other => {
                    let t = self.here().clone();
                    return Err(self.error_at(
                        &t,
                        format!("unknown logfmt flag '--{other}': use --strict or --keep-empty"),
                    ));
                }
            }
            self.next();
        }
        while let Tok::Ident(name) = self.peek().clone() {
            if matches!(self.peek_at(1), Tok::Eq) {
                self.next();
                self.next();
                let (key, _) = self.string("a quoted logfmt key")?;
                options.fields.push((name, key));
            } else if matches!(
                self.peek_at(1),
                Tok::Comma | Tok::Pipe | Tok::Eof | Tok::RParen | Tok::LBracket
            ) {
                self.next();
                options.fields.push((name.clone(), name));
            } else {
                break;
            }
            if self.peek() == &Tok::Comma {
                self.next();
            } else {
                break;
            }
        }
        if let Tok::Flag(_) = self.peek() {
            let t = self.here().clone();
            return Err(self.error_at(
                &t,
                "logfmt flags come right after logfmt, before the labels".into(),
            ));
        }
        Ok(options)
    }

    fn label_formats(&mut self) -> Result<Vec<LabelFormat>, ParseError> {
        let mut out: Vec<LabelFormat> = Vec::new();
        loop {
            let (dst, at) = self.ident("a label name in label_format")?;
            self.expect(&Tok::Eq, "'=' in label_format")?;
            let op = match self.peek().clone() {
                Tok::Ident(src) => {
                    self.next();
                    LabelFormat::Rename {
                        dst: dst.clone(),
                        src,
                    }
                }
                Tok::Str(text) => {
                    let t = self.next();
                    let template =
                        Template::parse(&text).map_err(|e| self.error_at(&t, e.to_string()))?;
                    LabelFormat::Template {
                        dst: dst.clone(),
                        template: Arc::new(template),
                    }
                }
                _ => return Err(self.expected("a label name or a quoted template")),
            };
            let taken = out.iter().any(|f| match f {
                LabelFormat::Rename { dst: d, .. } | LabelFormat::Template { dst: d, .. } => {
                    *d == dst
                }
            });
            if taken {
                return Err(self.error_at(
                    &at,
                    format!("multiple label name '{dst}' not allowed in a single format operation"),
                ));
            }
            out.push(op);
            if self.peek() == &Tok::Comma {
                self.next();
            } else {
                return Ok(out);
            }
        }
    }

    fn label_selections(&mut self, stage: &str) -> Result<Vec<LabelSelection>, ParseError> {
        let mut out = Vec::new();
        loop {
            let (name, _) = self.ident(&format!("a label name after {stage}"))?;
            let op = match self.peek() {
                Tok::Eq => Some(MatchOp::Equal),
                Tok::Neq => Some(MatchOp::NotEqual),
                Tok::EqTilde => Some(MatchOp::Regex),
                Tok::NotTilde => Some(MatchOp::NotRegex),
                _ => None,
            };
            let matcher = match op {
                Some(op) => {
                    self.next();
                    let (value, at) = self.string("a quoted value")?;
                    Some(
                        Matcher::new(&name, op, &value)
                            .map_err(|e| self.error_at(&at, e.to_string()))?,
                    )
                }
                None => None,
            };
            out.push(LabelSelection { name, matcher });
            if self.peek() == &Tok::Comma {
                self.next();
            } else {
                return Ok(out);
            }
        }
    }

    fn unwrap(&mut self) -> Result<Unwrap, ParseError> {
        self.next();
        let (word, at) = self.ident("a label name after unwrap")?;
        let (label, conversion) = if self.peek() == &Tok::LParen {
            let conversion = match word.as_str() {
                "duration" | "duration_seconds" => Conversion::Duration,
                "bytes" => Conversion::Bytes,
                other => {
                    return Err(self.error_at(&at, format!("unknown unwrap conversion '{other}': use duration, duration_seconds or bytes")));
                }
            };
            self.next();
            let (label, _) = self.ident("a label name")?;
            self.expect(&Tok::RParen, "')'")?;
            (label, conversion)
        } else {
            (word, Conversion::Float)
        };
        let mut post = Vec::new();
        while self.peek() == &Tok::Pipe {
            self.next();
            let t = self.here().clone();
            if let Tok::Ident(w) = &t.tok
                && STAGE_WORDS.contains(&w.as_str())
                && !self.comparison_follows()
            {
                return Err(self.error_at(&t, "only label filters may follow unwrap".into()));
            }
            post.push(self.predicate()?);
        }
        if matches!(
            self.peek(),
            Tok::PipeEq | Tok::Neq | Tok::PipeTilde | Tok::NotTilde | Tok::PipeGt | Tok::NotGt
        ) {
            let t = self.here().clone();
            return Err(self.error_at(&t, "only label filters may follow unwrap".into()));
        }
        Ok(Unwrap {
            label,
            conversion,
            post,
        })
    }

    /// Label predicates joined by `and`, `,`, a space or `or`, evaluated
    /// left to right (Loki's precedence); parentheses group.
    pub(super) fn predicate(&mut self) -> Result<LabelPredicate, ParseError> {
        self.nested(|p| {
            let mut lhs = p.atom()?;
            let mut chain = 0;
            loop {
                let or = p.peek_word("or");
                let and = p.peek_word("and") || p.peek() == &Tok::Comma;
                // `a="x" b="y"`: a space is an `and` too.
                let bare = matches!(p.peek(), Tok::Ident(w) if w != "or" && w != "and" && w != "by" && w != "without" && w != "offset")
                    && p.comparison_follows();
                if !(or || and || bare) {
                    return Ok(lhs);
                }
                chain += 1;
                p.deeper(chain)?;
                if or || and {
                    p.next();
                }
                let rhs = p.atom()?;
                lhs = if or {
                    LabelPredicate::Or(Box::new(lhs), Box::new(rhs))
                } else {
                    LabelPredicate::And(Box::new(lhs), Box::new(rhs))
                };
            }
        })
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
        let negative = if self.peek() == &Tok::Minus {
            self.next();
            true
        } else {
            false
        };
        let literal = self.here().clone();
        let sign = if negative { -1.0 } else { 1.0 };
        let (value, kind) = match literal.tok.clone() {
            Tok::Str(s) if !negative => {
                let Some(op) = string_op else {
                    return Err(self.error_at(&literal, format!("'{name}' is compared as a number here; write a number, duration or size")));
                };
                self.next();
                let m = Matcher::new(&name, op, &s)
                    .map_err(|e| self.error_at(&literal, e.to_string()))?;
                return Ok(LabelPredicate::Match(m));
            }
            Tok::Ident(word) if word == "ip" && !negative => {
                let negate = match op_token.tok {
                    Tok::Eq | Tok::EqEq => false,
                    Tok::Neq => true,
                    _ => {
                        return Err(
                            self.error_at(&op_token, "ip() label filters take = or !=".into())
                        );
                    }
                };
                let (ip, _) = self.ip_argument()?;
                return Ok(LabelPredicate::Ip {
                    name,
                    negate,
                    ip: Arc::new(ip),
                });
            }
            Tok::Num(n) => (sign * n, ValueKind::Number),
            Tok::Duration(d) => (sign * d as f64 / 1e9, ValueKind::Duration),
            Tok::Bytes(b) => (sign * b as f64, ValueKind::Bytes),
            _ => return Err(self.expected("a quoted value, number, duration, size or ip(\"…\")")),
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

/// A `regexp` stage's expression: at least one named group, valid and
/// distinct names.
fn named_regex(text: &str) -> Result<NamedRegex, String> {
    let regex = regex::bytes::RegexBuilder::new(text)
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .map_err(|e| format!("invalid regular expression {text:?}: {e}"))?;
    let mut names: Vec<Option<String>> = Vec::new();
    for name in regex.capture_names() {
        if let Some(n) = name {
            if !is_label_name(n) {
                return Err(format!("invalid extracted label name '{n}'"));
            }
            if names.iter().flatten().any(|seen| seen == n) {
                return Err(format!("duplicate extracted label name '{n}'"));
            }
        }
        names.push(name.map(str::to_owned));
    }
    if names.iter().all(Option::is_none) {
        return Err("at least one named capture must be supplied, e.g. (?P<name>…)".into());
    }
    Ok(NamedRegex { regex, names })
}

/// Parses a JSON path: `a.b`, `a["b c"]`, `list[0]`, and mixes.
pub(crate) fn json_path(text: &str) -> Result<JsonPath, String> {
    let bad = |why: &str| format!("cannot parse JSON path {text:?}: {why}");
    let chars: Vec<char> = text.chars().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    let mut expect_field = true;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                if expect_field {
                    return Err(bad("a field name is missing"));
                }
                expect_field = true;
                i += 1;
            }
            '[' => {
                let close = chars[i..]
                    .iter()
                    .position(|&c| c == ']')
                    .ok_or_else(|| bad("unclosed ["))?
                    + i;
                let inner: String = chars[i + 1..close].iter().collect();
                let inner = inner.trim();
                if let Some(quoted) = inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                    steps.push(PathStep::Field(quoted.replace("\\\"", "\"")));
                } else {
                    let index: usize = inner
                        .parse()
                        .map_err(|_| bad("an index must be a number or a quoted name"))?;
                    steps.push(PathStep::Index(index));
                }
                expect_field = false;
                i = close + 1;
            }
            _ => {
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                steps.push(PathStep::Field(chars[start..i].iter().collect()));
                expect_field = false;
            }
        }
    }
    if steps.is_empty() || expect_field {
        return Err(bad("it is empty or ends with '.'"));
    }
    Ok(steps)
}
