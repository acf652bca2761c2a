//! Template values and the evaluator.

use std::collections::BTreeMap;

use super::{Command, Context, MAX_OUTPUT, Node, Operand, Pipeline, TemplateError, funcs};

/// A value inside a template.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// No value.
    Nil,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// An instant: ns since the epoch and a zone offset in seconds.
    Time(i64, i32),
    /// A list (from `fromJson`).
    List(Vec<Value>),
    /// An object (from `fromJson`).
    Map(BTreeMap<String, Value>),
    /// The labels of the entry: the template's `.`.
    Dot,
}

/// Reads a number literal as Go's template parser does.
pub(super) fn number(text: &str) -> Option<Value> {
    let clean = text.replace('_', "");
    let (sign, digits) = match clean.strip_prefix('-') {
        Some(rest) => (-1i64, rest),
        None => (1, clean.strip_prefix('+').unwrap_or(&clean)),
    };
    let radix = |prefix: &str, radix: u32| {
        digits
            .strip_prefix(prefix)
            .and_then(|d| i64::from_str_radix(d, radix).ok())
            .map(|v| Value::Int(sign * v))
    };
    radix("0x", 16)
        .or_else(|| radix("0X", 16))
        .or_else(|| radix("0o", 8))
        .or_else(|| radix("0b", 2))
        .or_else(|| digits.parse::<i64>().ok().map(|v| Value::Int(sign * v)))
        .or_else(|| clean.parse::<f64>().ok().map(Value::Float))
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 64)`, which `%v` uses.
pub fn format_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let exponent = f.abs().log10().floor() as i32;
    if !(-4..21).contains(&exponent) {
        // Shortest mantissa, Go's exponent form: 1e+21, 1.5e-05.
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    format!("{f}")
}

impl Value {
    /// How `{{ x }}` prints it (Go's `%v`).
    pub fn render(&self, context: &dyn Context) -> String {
        match self {
            Value::Nil => "<no value>".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => format_float(*f),
            Value::Str(s) => s.clone(),
            Value::Time(ns, offset) => super::layout::go_string(*ns, *offset),
            Value::List(items) => {
                let parts: Vec<String> = items.iter().map(|v| v.render(context)).collect();
                format!("[{}]", parts.join(" "))
            }
            Value::Map(map) => {
                let parts: Vec<String> = map
                    .iter()
                    .map(|(k, v)| format!("{k}:{}", v.render(context)))
                    .collect();
                format!("map[{}]", parts.join(" "))
            }
            Value::Dot => {
                let parts: Vec<String> = context
                    .labels()
                    .into_iter()
                    .map(|(k, v)| format!("{k}:{v}"))
                    .collect();
                format!("map[{}]", parts.join(" "))
            }
        }
    }

    /// Go's truth: false, 0, nil and empty things are false.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Time(..) | Value::Dot => true,
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
        }
    }

    /// As a string argument (numbers print as `%v`).
    pub fn text(&self, context: &dyn Context) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Nil => String::new(),
            other => other.render(context),
        }
    }
}

/// The evaluator's state: the context and the variables in scope.
pub(super) struct State<'c> {
    pub(super) context: &'c dyn Context,
    vars: Vec<(String, Value)>,
    /// Bytes written so far, for the output bound.
    written: usize,
}

fn exec(message: impl Into<String>) -> TemplateError {
    TemplateError::Exec(message.into())
}

impl<'c> State<'c> {
    pub(super) fn new(context: &'c dyn Context) -> Self {
        Self {
            context,
            vars: vec![("".into(), Value::Dot)],
            written: 0,
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), TemplateError> {
        self.written += bytes.len();
        if self.written > MAX_OUTPUT {
            return Err(exec(format!(
                "the output is longer than {MAX_OUTPUT} bytes"
            )));
        }
        out.extend_from_slice(bytes);
        Ok(())
    }

    pub(super) fn walk(
        &mut self,
        nodes: &[Node],
        dot: &Value,
        out: &mut Vec<u8>,
    ) -> Result<(), TemplateError> {
        for node in nodes {
            match node {
                Node::Text(t) => self.emit(out, t.as_bytes())?,
                Node::Action(p) => {
                    let v = self.pipeline(p, dot)?;
                    if p.vars.is_empty() {
                        let text = v.render(self.context);
                        self.emit(out, text.as_bytes())?;
                    }
                }
                Node::If {
                    cond,
                    then,
                    otherwise,
                } => {
                    let scope = self.vars.len();
                    let v = self.pipeline(cond, dot)?;
                    let branch = if v.truthy() { then } else { otherwise };
                    self.walk(branch, dot, out)?;
                    self.vars.truncate(scope);
                }
                Node::With {
                    pipe,
                    body,
                    otherwise,
                } => {
                    let scope = self.vars.len();
                    let v = self.pipeline(pipe, dot)?;
                    if v.truthy() {
                        self.walk(body, &v, out)?;
                    } else {
                        self.walk(otherwise, dot, out)?;
                    }
                    self.vars.truncate(scope);
                }
                Node::Range {
                    pipe,
                    body,
                    otherwise,
                } => {
                    let scope = self.vars.len();
                    let names = pipe.vars.clone();
                    let bare = Pipeline {
                        vars: Vec::new(),
                        declare: false,
                        commands: pipe.commands.clone(),
                    };
                    let v = self.pipeline(&bare, dot)?;
                    let items: Vec<(Value, Value)> = match v {
                        Value::List(list) => list
                            .into_iter()
                            .enumerate()
                            .map(|(i, v)| (Value::Int(i as i64), v))
                            .collect(),
                        Value::Map(map) => {
                            map.into_iter().map(|(k, v)| (Value::Str(k), v)).collect()
                        }
                        Value::Dot => self
                            .context
                            .labels()
                            .into_iter()
                            .map(|(k, v)| (Value::Str(k), Value::Str(v)))
                            .collect(),
                        Value::Int(n) if n > MAX_OUTPUT as i64 => {
                            return Err(exec(format!(
                                "range over {n}: more than {MAX_OUTPUT} turns"
                            )));
                        }
                        Value::Int(n) => (0..n.max(0))
                            .map(|i| (Value::Int(i), Value::Int(i)))
                            .collect(),
                        Value::Nil => Vec::new(),
                        other => {
                            return Err(exec(format!(
                                "range can't iterate over {}",
                                other.render(self.context)
                            )));
                        }
                    };
                    if items.is_empty() {
                        self.walk(otherwise, dot, out)?;
                    }
                    for (key, item) in items {
                        let inner = self.vars.len();
                        match names.as_slice() {
                            [] => {}
                            [v] => self.vars.push((v.clone(), item.clone())),
                            [k, v, ..] => {
                                self.vars.push((k.clone(), key));
                                self.vars.push((v.clone(), item.clone()));
                            }
                        }
                        self.walk(body, &item, out)?;
                        self.vars.truncate(inner);
                    }
                    self.vars.truncate(scope);
                }
            }
        }
        Ok(())
    }

    fn pipeline(&mut self, p: &Pipeline, dot: &Value) -> Result<Value, TemplateError> {
        let mut value: Option<Value> = None;
        for command in &p.commands {
            value = Some(self.command(command, dot, value)?);
        }
        let value = value.unwrap_or(Value::Nil);
        if let Some(name) = p.vars.first() {
            if p.declare {
                self.vars.push((name.clone(), value.clone()));
            } else if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) {
                slot.1 = value.clone();
            } else {
                return Err(exec(format!("undefined variable ${name}")));
            }
        }
        Ok(value)
    }

    fn command(
        &mut self,
        command: &Command,
        dot: &Value,
        piped: Option<Value>,
    ) -> Result<Value, TemplateError> {
        let (first, rest) = command
            .operands
            .split_first()
            .expect("the parser refuses empty commands");
        if let Operand::Func(name) = first {
            let mut args = Vec::with_capacity(rest.len() + 1);
            for operand in rest {
                args.push(self.operand(operand, dot)?);
            }
            args.extend(piped);
            return funcs::call(name, args, self);
        }
        if !rest.is_empty() || piped.is_some() {
            return Err(exec(format!(
                "can't give argument to non-function {:?}",
                first
            )));
        }
        self.operand(first, dot)
    }

    fn operand(&mut self, operand: &Operand, dot: &Value) -> Result<Value, TemplateError> {
        Ok(match operand {
            Operand::Literal(v) => v.clone(),
            Operand::Field(path) => self.fields(dot.clone(), path),
            Operand::Var(name, path) => {
                let v = if name.is_empty() {
                    Value::Dot
                } else {
                    self.vars
                        .iter()
                        .rev()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.clone())
                        .ok_or_else(|| exec(format!("undefined variable ${name}")))?
                };
                self.fields(v, path)
            }
            Operand::Func(name) => funcs::call(name, Vec::new(), self)?,
            Operand::Sub(p, path) => {
                let v = self.pipeline(p, dot)?;
                self.fields(v, path)
            }
        })
    }

    fn fields(&self, mut value: Value, path: &[String]) -> Value {
        for name in path {
            value = match value {
                // Loki renders with missingkey=zero over a string map.
                Value::Dot => Value::Str(self.context.label(name).unwrap_or("").to_owned()),
                Value::Map(mut map) => map.remove(name).unwrap_or(Value::Nil),
                _ => Value::Nil,
            };
        }
        value
    }
}
