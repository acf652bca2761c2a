//! Go `text/template`, as Loki's `line_format` and `label_format` use it:
//! `{{ .label }}`, pipelines (`{{ .path | trunc 5 | upper }}`), `if` /
//! `else if` / `else`, `with`, `range`, variables, comments, trim markers,
//! and Loki's function list (see [`funcs`]).
//!
//! Our own evaluator, bounded: nesting is limited when parsing, and a
//! rendering that grows past [`MAX_OUTPUT`] stops with an error instead of
//! eating memory (`{{ repeat 1000000000 "x" }}`).

mod funcs;
mod layout;
mod printf;
mod value;

use std::fmt;

pub use value::Value;

/// The most a rendering may produce, in bytes.
pub const MAX_OUTPUT: usize = 1 << 20;
/// The deepest blocks and parentheses may nest.
const MAX_DEPTH: usize = 50;

/// A parsed template.
#[derive(Clone, Debug)]
pub struct Template {
    nodes: Vec<Node>,
    source: String,
}

impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// Why a template does not parse or render.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The text is not a valid template.
    #[error("template: {0}")]
    Parse(String),
    /// Rendering failed (a bad argument, a function error, too much output).
    #[error("template: {0}")]
    Exec(String),
}

#[derive(Clone, Debug)]
enum Node {
    Text(String),
    Action(Pipeline),
    If {
        cond: Pipeline,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
    With {
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
    Range {
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

#[derive(Clone, Debug)]
struct Pipeline {
    /// `$x :=` / `$k, $v :=` (declare) or `$x =` (assign).
    vars: Vec<String>,
    declare: bool,
    commands: Vec<Command>,
}

#[derive(Clone, Debug)]
struct Command {
    operands: Vec<Operand>,
}

#[derive(Clone, Debug)]
enum Operand {
    /// `.`, `.a.b`
    Field(Vec<String>),
    /// `$`, `$x`, `$x.a`
    Var(String, Vec<String>),
    /// A function name.
    Func(String),
    /// A literal.
    Literal(Value),
    /// `( pipeline )`, then fields.
    Sub(Box<Pipeline>, Vec<String>),
}

/// What a template sees: the labels, the line and its timestamp.
pub trait Context {
    /// A label's value.
    fn label(&self, name: &str) -> Option<&str>;
    /// Every label, for `{{ . }}` and `range`.
    fn labels(&self) -> Vec<(String, String)>;
    /// The line (`__line__`).
    fn line(&self) -> &[u8];
    /// The timestamp, ns (`__timestamp__`).
    fn timestamp(&self) -> i64;
}

impl Template {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let pieces = split(text)?;
        let mut at = 0;
        let (nodes, end) = parse_list(&pieces, &mut at, 0)?;
        if let Some(end) = end {
            return Err(TemplateError::Parse(format!("unexpected {{{{{end}}}}}")));
        }
        Ok(Self {
            nodes,
            source: text.to_owned(),
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The labels the template reads by name (`.name`); `None` when it may
    /// read any (`{{ . }}`, `range`, variables).
    pub fn labels_read(&self) -> Option<Vec<String>> {
        let mut names = Vec::new();
        walk_names(&self.nodes, &mut names).then_some(names)
    }

    /// Renders the template.
    pub fn render(&self, context: &dyn Context) -> Result<Vec<u8>, TemplateError> {
        let mut state = value::State::new(context);
        let dot = Value::Dot;
        let mut out = Vec::new();
        state.walk(&self.nodes, &dot, &mut out)?;
        Ok(out)
    }
}

fn walk_names(nodes: &[Node], names: &mut Vec<String>) -> bool {
    nodes.iter().all(|node| match node {
        Node::Text(_) => true,
        Node::Action(p) => pipe_names(p, names),
        Node::If {
            cond,
            then,
            otherwise,
        } => pipe_names(cond, names) && walk_names(then, names) && walk_names(otherwise, names),
        // `with` and `range` change the dot: anything may be read.
        Node::With { .. } | Node::Range { .. } => false,
    })
}

fn pipe_names(p: &Pipeline, names: &mut Vec<String>) -> bool {
    p.commands.iter().all(|c| {
        c.operands.iter().all(|o| match o {
            Operand::Field(path) if path.is_empty() => false,
            Operand::Field(path) => {
                names.push(path[0].clone());
                true
            }
            Operand::Var(..) => false,
            Operand::Sub(p, _) => pipe_names(p, names),
            Operand::Func(_) | Operand::Literal(_) => true,
        })
    })
}

/// Text and the insides of actions, trim markers applied.
#[derive(Debug)]
enum Piece {
    Text(String),
    Action(String),
}

fn split(text: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = text;
    let mut trim_next = false;
    while let Some(open) = rest.find("{{") {
        let mut before = &rest[..open];
        if trim_next {
            before = before.trim_start();
        }
        let mut inner_start = open + 2;
        let trim_left = rest[inner_start..].starts_with("- ")
            || rest[inner_start..].starts_with("-\t")
            || rest[inner_start..].starts_with("-\n");
        if trim_left {
            before = before.trim_end();
            inner_start += 1;
        }
        if !before.is_empty() {
            pieces.push(Piece::Text(before.to_owned()));
        }
        let after_open = &rest[inner_start..];
        // A comment may hold "}}"; it ends at "*/}}".
        let trimmed = after_open.trim_start();
        let close = if trimmed.starts_with("/*") {
            let end = after_open
                .find("*/")
                .ok_or_else(|| TemplateError::Parse("unclosed comment".into()))?;
            after_open[end..]
                .find("}}")
                .map(|c| end + c)
                .ok_or_else(|| TemplateError::Parse("unclosed action".into()))?
        } else {
            find_close(after_open)?
        };
        let mut inner = &after_open[..close];
        trim_next = false;
        if inner.ends_with(" -") || inner.ends_with("\t-") || inner.ends_with("\n-") {
            inner = &inner[..inner.len() - 1];
            trim_next = true;
        }
        let inner = inner.trim();
        if !(inner.starts_with("/*") && inner.ends_with("*/")) {
            pieces.push(Piece::Action(inner.to_owned()));
        }
        rest = &after_open[close + 2..];
    }
    let last = if trim_next { rest.trim_start() } else { rest };
    if !last.is_empty() {
        pieces.push(Piece::Text(last.to_owned()));
    }
    Ok(pieces)
}

/// The end of an action: the first `}}` outside a quoted string.
fn find_close(text: &str) -> Result<usize, TemplateError> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\'' => {
                let quote = bytes[i];
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => return Ok(i),
            _ => {}
        }
        i += 1;
    }
    Err(TemplateError::Parse("unclosed action: missing }}".into()))
}

/// Parses nodes until `{{end}}` / `{{else …}}` (returned) or the end.
fn parse_list(
    pieces: &[Piece],
    at: &mut usize,
    depth: usize,
) -> Result<(Vec<Node>, Option<String>), TemplateError> {
    if depth > MAX_DEPTH {
        return Err(TemplateError::Parse(format!(
            "blocks nest more than {MAX_DEPTH} deep"
        )));
    }
    let mut nodes = Vec::new();
    while *at < pieces.len() {
        let piece = &pieces[*at];
        *at += 1;
        let action = match piece {
            Piece::Text(t) => {
                nodes.push(Node::Text(t.clone()));
                continue;
            }
            Piece::Action(a) => a.as_str(),
        };
        let (keyword, rest) = match action.split_once(char::is_whitespace) {
            Some((k, r)) => (k, r.trim()),
            None => (action, ""),
        };
        match keyword {
            "end" | "else" => return Ok((nodes, Some(action.to_owned()))),
            "if" | "with" | "range" => {
                let pipe = parse_pipeline(rest, depth)?;
                let (body, end) = parse_list(pieces, at, depth + 1)?;
                let otherwise = else_branch(keyword, end, pieces, at, depth)?;
                nodes.push(match keyword {
                    "if" => Node::If {
                        cond: pipe,
                        then: body,
                        otherwise,
                    },
                    "with" => Node::With {
                        pipe,
                        body,
                        otherwise,
                    },
                    _ => Node::Range {
                        pipe,
                        body,
                        otherwise,
                    },
                });
            }
            "define" | "template" | "block" | "break" | "continue" => {
                return Err(TemplateError::Parse(format!(
                    "{{{{{keyword}}}}} is not supported in line_format or label_format"
                )));
            }
            _ => nodes.push(Node::Action(parse_pipeline(action, depth)?)),
        }
    }
    Ok((nodes, None))
}

/// After a block's body: `{{end}}`, or `{{else}} … {{end}}`, or
/// `{{else if …}}` (a nested `if` in the else branch).
fn else_branch(
    keyword: &str,
    end: Option<String>,
    pieces: &[Piece],
    at: &mut usize,
    depth: usize,
) -> Result<Vec<Node>, TemplateError> {
    let Some(end) = end else {
        return Err(TemplateError::Parse(format!(
            "unexpected end of template: {{{{{keyword}}}}} needs {{{{end}}}}"
        )));
    };
    if end == "end" {
        return Ok(Vec::new());
    }
    let rest = end.strip_prefix("else").unwrap_or("").trim();
    if rest.is_empty() {
        let (otherwise, end) = parse_list(pieces, at, depth + 1)?;
        if end.as_deref() != Some("end") {
            return Err(TemplateError::Parse(format!(
                "{{{{else}}}} of {{{{{keyword}}}}} needs {{{{end}}}}"
            )));
        }
        return Ok(otherwise);
    }
    let (nested, cond) = rest
        .split_once(char::is_whitespace)
        .ok_or_else(|| TemplateError::Parse(format!("bad {{{{{end}}}}}")))?;
    if nested != "if" && nested != "with" {
        return Err(TemplateError::Parse(format!("bad {{{{{end}}}}}")));
    }
    let pipe = parse_pipeline(cond.trim(), depth)?;
    let (body, end) = parse_list(pieces, at, depth + 1)?;
    let otherwise = else_branch(nested, end, pieces, at, depth + 1)?;
    Ok(vec![if nested == "if" {
        Node::If {
            cond: pipe,
            then: body,
            otherwise,
        }
    } else {
        Node::With {
            pipe,
            body,
            otherwise,
        }
    }])
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Field(Vec<String>),
    Var(String, Vec<String>),
    Lit(Value),
    LParen,
    RParen,
    Pipe,
    Declare,
    Assign,
    Comma,
}

fn lex(text: &str) -> Result<Vec<Tok>, TemplateError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let bad = |m: String| TemplateError::Parse(m);
    let path = |chars: &[char], i: &mut usize| -> Vec<String> {
        let mut path = Vec::new();
        while *i < chars.len() && chars[*i] == '.' {
            let start = *i + 1;
            let mut j = start;
            while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            if j == start {
                break;
            }
            path.push(chars[start..j].iter().collect());
            *i = j;
        }
        path
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
                let fields = path(&chars, &mut i);
                if !fields.is_empty() {
                    out.push(Tok::Field(fields));
                }
            }
            '|' => {
                out.push(Tok::Pipe);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Declare);
                i += 2;
            }
            '=' => {
                out.push(Tok::Assign);
                i += 1;
            }
            '.' if chars.get(i + 1).is_none_or(|n| !n.is_ascii_digit()) => {
                let fields = path(&chars, &mut i);
                if fields.is_empty() {
                    i += 1;
                }
                out.push(Tok::Field(fields));
            }
            '$' => {
                let start = i + 1;
                let mut j = start;
                while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                let name: String = chars[start..j].iter().collect();
                i = j;
                let fields = path(&chars, &mut i);
                out.push(Tok::Var(name, fields));
            }
            '"' => {
                let mut s = String::new();
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => return Err(bad("unterminated quoted string".into())),
                        Some('"') => break,
                        Some('\\') => {
                            let e = chars.get(j + 1).copied().unwrap_or('\\');
                            s.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                '0' => '\0',
                                other => other,
                            });
                            j += 2;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            j += 1;
                        }
                    }
                }
                out.push(Tok::Lit(Value::Str(s)));
                i = j + 1;
            }
            '`' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&c| c == '`')
                    .ok_or_else(|| bad("unterminated raw string".into()))?;
                out.push(Tok::Lit(Value::Str(
                    chars[i + 1..i + 1 + end].iter().collect(),
                )));
                i += end + 2;
            }
            '\'' => {
                let (ch, len) = match (chars.get(i + 1), chars.get(i + 2), chars.get(i + 3)) {
                    (Some('\\'), Some(e), Some('\'')) => (
                        match e {
                            'n' => '\n',
                            't' => '\t',
                            other => *other,
                        },
                        4,
                    ),
                    (Some(c), Some('\''), _) => (*c, 3),
                    _ => return Err(bad("bad character constant".into())),
                };
                out.push(Tok::Lit(Value::Int(ch as i64)));
                i += len;
            }
            c if c.is_ascii_digit()
                || ((c == '-' || c == '+' || c == '.')
                    && chars
                        .get(i + 1)
                        .is_some_and(|n| n.is_ascii_digit() || *n == '.')) =>
            {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric()
                        || chars[i] == '.'
                        || chars[i] == '_'
                        || ((chars[i] == '-' || chars[i] == '+')
                            && matches!(chars[i - 1], 'e' | 'E' | 'p' | 'P')))
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                out.push(Tok::Lit(
                    value::number(&text)
                        .ok_or_else(|| bad(format!("bad number syntax: {text:?}")))?,
                ));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                out.push(match word.as_str() {
                    "true" => Tok::Lit(Value::Bool(true)),
                    "false" => Tok::Lit(Value::Bool(false)),
                    "nil" => Tok::Lit(Value::Nil),
                    _ => Tok::Ident(word),
                });
            }
            other => return Err(bad(format!("unexpected {other:?} in action"))),
        }
    }
    Ok(out)
}

fn parse_pipeline(text: &str, depth: usize) -> Result<Pipeline, TemplateError> {
    let toks = lex(text)?;
    let mut at = 0;
    let pipe = pipeline(&toks, &mut at, depth)?;
    if at != toks.len() {
        return Err(TemplateError::Parse(format!(
            "unexpected {:?} in {{{{{text}}}}}",
            toks[at]
        )));
    }
    Ok(pipe)
}

fn pipeline(toks: &[Tok], at: &mut usize, depth: usize) -> Result<Pipeline, TemplateError> {
    if depth > MAX_DEPTH {
        return Err(TemplateError::Parse(format!(
            "parentheses nest more than {MAX_DEPTH} deep"
        )));
    }
    let mut vars = Vec::new();
    let mut declare = false;
    // `$x :=`, `$k, $v :=`, `$x =`
    let mut look = *at;
    let mut names = Vec::new();
    while let Some(Tok::Var(name, path)) = toks.get(look) {
        if !path.is_empty() {
            break;
        }
        names.push(name.clone());
        look += 1;
        match toks.get(look) {
            Some(Tok::Comma) => look += 1,
            Some(Tok::Declare) | Some(Tok::Assign) => break,
            _ => {
                names.clear();
                break;
            }
        }
    }
    if !names.is_empty() && matches!(toks.get(look), Some(Tok::Declare) | Some(Tok::Assign)) {
        declare = toks[look] == Tok::Declare;
        vars = names;
        *at = look + 1;
    }
    let mut commands = Vec::new();
    loop {
        let mut operands = Vec::new();
        while let Some(tok) = toks.get(*at) {
            let operand = match tok {
                Tok::Pipe | Tok::RParen => break,
                Tok::Ident(name) => Operand::Func(name.clone()),
                Tok::Field(path) => Operand::Field(path.clone()),
                Tok::Var(name, path) => Operand::Var(name.clone(), path.clone()),
                Tok::Lit(v) => Operand::Literal(v.clone()),
                Tok::LParen => {
                    *at += 1;
                    let inner = pipeline(toks, at, depth + 1)?;
                    if toks.get(*at) != Some(&Tok::RParen) {
                        return Err(TemplateError::Parse("unclosed left paren".into()));
                    }
                    let fields = match toks.get(*at + 1) {
                        Some(Tok::Field(f)) if !f.is_empty() => {
                            *at += 1;
                            f.clone()
                        }
                        _ => Vec::new(),
                    };
                    Operand::Sub(Box::new(inner), fields)
                }
                other => {
                    return Err(TemplateError::Parse(format!("unexpected {other:?}")));
                }
            };
            operands.push(operand);
            *at += 1;
        }
        if operands.is_empty() {
            return Err(TemplateError::Parse("missing value for command".into()));
        }
        commands.push(Command { operands });
        if toks.get(*at) == Some(&Tok::Pipe) {
            *at += 1;
        } else {
            break;
        }
    }
    for command in &commands {
        if let Operand::Func(name) = &command.operands[0]
            && !funcs::exists(name)
        {
            return Err(TemplateError::Parse(format!(
                "function {name:?} not defined"
            )));
        }
    }
    Ok(Pipeline {
        vars,
        declare,
        commands,
    })
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests;
