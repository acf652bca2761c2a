//! The functions a Loki template may call: Go's built-ins, Loki's own and
//! the sprig subset Loki enables (`docs/sources/query/template_functions.md`).

use std::collections::BTreeMap;

use base64::Engine;

use super::value::{State, Value};
use super::{MAX_OUTPUT, TemplateError, layout, printf};
use crate::logql::convert::{parse_go_duration, parse_humanized_bytes};

const NAMES: &[&str] = &[
    // Go's built-ins.
    "and",
    "or",
    "not",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "len",
    "index",
    "print",
    "printf",
    "println",
    "urlquery",
    "html",
    "js",
    "slice",
    // Loki's.
    "__line__",
    "__timestamp__",
    "ToLower",
    "ToUpper",
    "Replace",
    "Trim",
    "TrimLeft",
    "TrimRight",
    "TrimPrefix",
    "TrimSuffix",
    "TrimSpace",
    "regexReplaceAll",
    "regexReplaceAllLiteral",
    "count",
    "urlencode",
    "urldecode",
    "bytes",
    "duration",
    "duration_seconds",
    "unixEpochMillis",
    "unixEpochNanos",
    "toDateInZone",
    "unixToTime",
    "alignLeft",
    "alignRight",
    // sprig's, as Loki enables them.
    "b64enc",
    "b64dec",
    "lower",
    "upper",
    "title",
    "trunc",
    "substr",
    "contains",
    "hasPrefix",
    "hasSuffix",
    "indent",
    "nindent",
    "replace",
    "repeat",
    "trim",
    "trimAll",
    "trimSuffix",
    "trimPrefix",
    "int",
    "float64",
    "add",
    "sub",
    "mul",
    "div",
    "mod",
    "addf",
    "subf",
    "mulf",
    "divf",
    "max",
    "min",
    "maxf",
    "minf",
    "ceil",
    "floor",
    "round",
    "fromJson",
    "date",
    "toDate",
    "now",
    "unixEpoch",
    "default",
];

/// Whether a template may call `name`.
pub(super) fn exists(name: &str) -> bool {
    NAMES.contains(&name)
}

fn err(message: impl Into<String>) -> TemplateError {
    TemplateError::Exec(message.into())
}

/// sprig's `toInt64` (through `cast`): numbers truncate, strings parse
/// (`"3"`, `"3.0"`, `"0x1f"`), anything else is 0.
fn to_int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        Value::Float(f) => *f as i64,
        Value::Bool(b) => i64::from(*b),
        Value::Str(s) => {
            let s = s.trim();
            let s = s.strip_suffix(".0").unwrap_or(s);
            match super::value::number(s) {
                Some(Value::Int(i)) => i,
                _ => 0,
            }
        }
        Value::Time(ns, _) => ns / 1_000_000_000,
        _ => 0,
    }
}

/// sprig's `toFloat64`: strings parse, anything unreadable is 0.
fn to_float(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Str(s) => s.trim().parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

fn arity(name: &str, args: &[Value], n: usize) -> Result<(), TemplateError> {
    if args.len() != n {
        return Err(err(format!(
            "wrong number of args for {name}: want {n} got {}",
            args.len()
        )));
    }
    Ok(())
}

fn at_least(name: &str, args: &[Value], n: usize) -> Result<(), TemplateError> {
    if args.len() < n {
        return Err(err(format!(
            "wrong number of args for {name}: want at least {n} got {}",
            args.len()
        )));
    }
    Ok(())
}

fn bounded(n: i64, unit: usize) -> Result<usize, TemplateError> {
    let n = n.max(0) as usize;
    if n.saturating_mul(unit.max(1)) > MAX_OUTPUT {
        return Err(err(format!("the output is longer than {MAX_OUTPUT} bytes")));
    }
    Ok(n)
}

/// Floors `i` to a char boundary of `s` (Go slices bytes; we keep UTF-8).
fn boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn compare(a: &Value, b: &Value) -> Result<std::cmp::Ordering, TemplateError> {
    use Value::*;
    Ok(match (a, b) {
        (Int(x), Int(y)) => x.cmp(y),
        (Int(_) | Float(_), Int(_) | Float(_)) => to_float(a).total_cmp(&to_float(b)),
        (Str(x), Str(y)) => x.cmp(y),
        (Bool(x), Bool(y)) => x.cmp(y),
        (Nil, Nil) => std::cmp::Ordering::Equal,
        _ => return Err(err("incompatible types for comparison")),
    })
}

fn json_value(v: serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => n
            .as_i64()
            .map_or_else(|| Value::Float(n.as_f64().unwrap_or(0.0)), Value::Int),
        serde_json::Value::String(s) => Value::Str(s),
        serde_json::Value::Array(a) => Value::List(a.into_iter().map(json_value).collect()),
        serde_json::Value::Object(o) => Value::Map(
            o.into_iter()
                .map(|(k, v)| (k, json_value(v)))
                .collect::<BTreeMap<_, _>>(),
        ),
    }
}

/// Go's `url.QueryEscape`.
fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Go's `url.QueryUnescape`.
fn query_unescape(s: &str) -> Result<String, TemplateError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .ok_or_else(|| err(format!("invalid URL escape {:?}", &s[i..])))?;
                out.push(
                    u8::from_str_radix(hex, 16)
                        .map_err(|_| err(format!("invalid URL escape \"%{hex}\"")))?,
                );
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn time_of(v: &Value) -> Result<(i64, i32), TemplateError> {
    match v {
        Value::Time(ns, off) => Ok((*ns, *off)),
        // sprig's date also takes unix seconds.
        Value::Int(s) => Ok((s.saturating_mul(1_000_000_000), 0)),
        Value::Str(s) => s
            .trim()
            .parse::<i64>()
            .map(|s| (s.saturating_mul(1_000_000_000), 0))
            .map_err(|_| err(format!("date: {s:?} is not a time"))),
        _ => Err(err("date: not a time")),
    }
}

fn zone(name: &str) -> Result<i32, TemplateError> {
    match name {
        "" | "UTC" | "Local" | "Etc/UTC" | "GMT" => Ok(0),
        other => Err(err(format!(
            "unknown time zone {other:?}: only UTC and Local (the node's, UTC) are known"
        ))),
    }
}

fn now() -> i64 {
    crate::log_database::now_ns()
}

fn regex(pattern: &str) -> Result<regex::Regex, TemplateError> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| err(format!("error parsing regexp: {e}")))
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric() && c != '_' && c != '\'';
    }
    out
}

fn indent(n: i64, s: &str) -> Result<String, TemplateError> {
    let pad = " ".repeat(bounded(n, 1)?);
    bounded(
        (s.len() + pad.len() * (s.matches('\n').count() + 1)) as i64,
        1,
    )?;
    Ok(format!("{pad}{}", s.replace('\n', &format!("\n{pad}"))))
}

/// Calls `name` with `args` (a piped value is the last one).
pub(super) fn call(
    name: &str,
    args: Vec<Value>,
    state: &mut State<'_>,
) -> Result<Value, TemplateError> {
    let cx = state.context;
    let s = |i: usize| args.get(i).map(|v| v.text(cx)).unwrap_or_default();
    let last = || args.last().map(|v| v.text(cx)).unwrap_or_default();
    use Value::{Bool, Float, Int, Str};
    Ok(match name {
        "__line__" => Str(String::from_utf8_lossy(cx.line()).into_owned()),
        "__timestamp__" => Value::Time(cx.timestamp(), 0),
        "and" => {
            at_least(name, &args, 1)?;
            args.iter()
                .find(|v| !v.truthy())
                .unwrap_or(&args[args.len() - 1])
                .clone()
        }
        "or" => {
            at_least(name, &args, 1)?;
            args.iter()
                .find(|v| v.truthy())
                .unwrap_or(&args[args.len() - 1])
                .clone()
        }
        "not" => {
            arity(name, &args, 1)?;
            Bool(!args[0].truthy())
        }
        "eq" => {
            at_least(name, &args, 2)?;
            let mut any = false;
            for other in &args[1..] {
                any |= compare(&args[0], other)? == std::cmp::Ordering::Equal;
            }
            Bool(any)
        }
        "ne" | "lt" | "le" | "gt" | "ge" => {
            arity(name, &args, 2)?;
            let o = compare(&args[0], &args[1])?;
            Bool(match name {
                "ne" => o.is_ne(),
                "lt" => o.is_lt(),
                "le" => o.is_le(),
                "gt" => o.is_gt(),
                _ => o.is_ge(),
            })
        }
        "len" => {
            arity(name, &args, 1)?;
            Int(match &args[0] {
                Str(s) => s.len() as i64,
                Value::List(l) => l.len() as i64,
                Value::Map(m) => m.len() as i64,
                Value::Dot => cx.labels().len() as i64,
                _ => return Err(err("len of a value without a length")),
            })
        }
        "index" => {
            at_least(name, &args, 1)?;
            let mut v = args[0].clone();
            for key in &args[1..] {
                v = match v {
                    Value::List(l) => l
                        .get(to_int(key).max(0) as usize)
                        .cloned()
                        .ok_or_else(|| err("index out of range"))?,
                    Value::Map(mut m) => m.remove(&key.text(cx)).unwrap_or(Value::Nil),
                    Value::Dot => Str(cx.label(&key.text(cx)).unwrap_or("").to_owned()),
                    _ => return Err(err("can't index item")),
                };
            }
            v
        }
        "slice" => {
            at_least(name, &args, 1)?;
            let text = s(0);
            let from = args.get(1).map_or(0, |v| to_int(v).max(0) as usize);
            let to = args
                .get(2)
                .map_or(text.len(), |v| to_int(v).max(0) as usize);
            if from > to || to > text.len() {
                return Err(err("slice: index out of range"));
            }
            Str(text[boundary(&text, from)..boundary(&text, to)].to_owned())
        }
        "print" | "println" => {
            let mut out = String::new();
            for (i, v) in args.iter().enumerate() {
                let spaced = name == "println"
                    || (i > 0 && !matches!(v, Str(_)) && !matches!(args[i - 1], Str(_)));
                if i > 0 && spaced {
                    out.push(' ');
                }
                out.push_str(&v.render(cx));
            }
            if name == "println" {
                out.push('\n');
            }
            Str(out)
        }
        "printf" => {
            at_least(name, &args, 1)?;
            Str(printf::sprintf(&s(0), &args[1..], cx))
        }
        "urlquery" | "urlencode" => Str(query_escape(&last())),
        "urldecode" => Str(query_unescape(&last())?),
        "html" => Str(last()
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&#34;")
            .replace('\'', "&#39;")),
        "js" => Str(last()
            .replace('\\', "\\\\")
            .replace('\'', "\\'")
            .replace('"', "\\\"")
            .replace('<', "\\u003C")
            .replace('>', "\\u003E")),
        "ToLower" | "lower" => Str(last().to_lowercase()),
        "ToUpper" | "upper" => Str(last().to_uppercase()),
        "title" => Str(title(&last())),
        "TrimSpace" | "trim" => Str(last().trim().to_owned()),
        "Replace" => {
            arity(name, &args, 4)?;
            let n = to_int(&args[3]);
            let (src, old, new) = (s(0), s(1), s(2));
            Str(if n < 0 {
                src.replace(&old, &new)
            } else {
                src.replacen(&old, &new, n as usize)
            })
        }
        "Trim" | "TrimLeft" | "TrimRight" => {
            arity(name, &args, 2)?;
            let (src, cut) = (s(0), s(1));
            let set = |c: char| cut.contains(c);
            Str(match name {
                "Trim" => src.trim_matches(set),
                "TrimLeft" => src.trim_start_matches(set),
                _ => src.trim_end_matches(set),
            }
            .to_owned())
        }
        "TrimPrefix" | "TrimSuffix" => {
            arity(name, &args, 2)?;
            let (src, fix) = (s(0), s(1));
            Str(if name == "TrimPrefix" {
                src.strip_prefix(fix.as_str())
            } else {
                src.strip_suffix(fix.as_str())
            }
            .unwrap_or(&src)
            .to_owned())
        }
        "trimPrefix" | "trimSuffix" => {
            arity(name, &args, 2)?;
            let (fix, src) = (s(0), s(1));
            Str(if name == "trimPrefix" {
                src.strip_prefix(fix.as_str())
            } else {
                src.strip_suffix(fix.as_str())
            }
            .unwrap_or(&src)
            .to_owned())
        }
        "trimAll" => {
            arity(name, &args, 2)?;
            let (cut, src) = (s(0), s(1));
            Str(src.trim_matches(|c: char| cut.contains(c)).to_owned())
        }
        "regexReplaceAll" | "regexReplaceAllLiteral" => {
            arity(name, &args, 3)?;
            let re = regex(&s(0))?;
            let (src, with) = (s(1), s(2));
            Str(if name == "regexReplaceAll" {
                re.replace_all(&src, with.as_str()).into_owned()
            } else {
                re.replace_all(&src, regex::NoExpand(&with)).into_owned()
            })
        }
        "count" => {
            arity(name, &args, 2)?;
            Int(regex(&s(0))?.find_iter(&s(1)).count() as i64)
        }
        "bytes" => {
            arity(name, &args, 1)?;
            let text = s(0);
            Float(
                parse_humanized_bytes(&text)
                    .ok_or_else(|| err(format!("bytes: cannot read {text:?} as a size")))?,
            )
        }
        "duration" | "duration_seconds" => {
            arity(name, &args, 1)?;
            let text = s(0);
            Float(
                parse_go_duration(&text)
                    .ok_or_else(|| err(format!("time: invalid duration {text:?}")))?,
            )
        }
        "now" => Value::Time(now(), 0),
        "unixEpoch" | "unixEpochMillis" | "unixEpochNanos" => {
            arity(name, &args, 1)?;
            let (ns, _) = time_of(&args[0])?;
            let v = match name {
                "unixEpoch" => ns.div_euclid(1_000_000_000),
                "unixEpochMillis" => ns.div_euclid(1_000_000),
                _ => ns,
            };
            Str(v.to_string())
        }
        "unixToTime" => {
            arity(name, &args, 1)?;
            let text = s(0);
            let n: i64 = text
                .parse()
                .map_err(|_| err(format!("unable to parse time {text:?}")))?;
            let ns = match text.trim_start_matches('-').len() {
                5 => n.saturating_mul(86_400_000_000_000),
                10 => n.saturating_mul(1_000_000_000),
                13 => n.saturating_mul(1_000_000),
                16 => n.saturating_mul(1_000),
                19 => n,
                _ => return Err(err(format!("unable to parse time {text:?}"))),
            };
            Value::Time(ns, 0)
        }
        "date" => {
            arity(name, &args, 2)?;
            let (ns, off) = time_of(&args[1])?;
            Str(layout::format(ns, off, &s(0)))
        }
        "toDate" => {
            arity(name, &args, 2)?;
            let (ns, off) = layout::parse(&s(0), &s(1), 0).map_err(err)?;
            Value::Time(ns, off)
        }
        "toDateInZone" => {
            arity(name, &args, 3)?;
            let (ns, off) = layout::parse(&s(0), &s(2), zone(&s(1))?).map_err(err)?;
            Value::Time(ns, off)
        }
        "alignLeft" | "alignRight" => {
            arity(name, &args, 2)?;
            let count = to_int(&args[0]);
            let src = s(1);
            let chars: Vec<char> = src.chars().collect();
            Str(if count < 0 || count as usize == chars.len() {
                src
            } else {
                let count = bounded(count, 1)?;
                let fill = count.saturating_sub(chars.len());
                match (name, fill > 0) {
                    ("alignLeft", true) => src + &" ".repeat(fill),
                    ("alignLeft", false) => chars[..count].iter().collect(),
                    (_, true) => " ".repeat(fill) + &src,
                    (_, false) => chars[chars.len() - count..].iter().collect(),
                }
            })
        }
        "b64enc" => Str(base64::engine::general_purpose::STANDARD.encode(last())),
        "b64dec" => Str(
            match base64::engine::general_purpose::STANDARD.decode(last()) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(e) => e.to_string(),
            },
        ),
        "trunc" => {
            arity(name, &args, 2)?;
            let c = to_int(&args[0]);
            let src = s(1);
            let len = src.len() as i64;
            Str(if c < 0 && len + c > 0 {
                src[boundary(&src, (len + c) as usize)..].to_owned()
            } else if c >= 0 && len > c {
                src[..boundary(&src, c as usize)].to_owned()
            } else {
                src
            })
        }
        "substr" => {
            arity(name, &args, 3)?;
            let (start, end, src) = (to_int(&args[0]), to_int(&args[1]), s(2));
            let len = src.len() as i64;
            Str(if start < 0 {
                src[..boundary(&src, end.clamp(0, len) as usize)].to_owned()
            } else if end < 0 || end > len {
                src[boundary(&src, start.min(len) as usize)..].to_owned()
            } else if start <= end {
                src[boundary(&src, start as usize)..boundary(&src, end as usize)].to_owned()
            } else {
                return Err(err("substr: start after end"));
            })
        }
        "contains" => {
            arity(name, &args, 2)?;
            Bool(s(1).contains(&s(0)))
        }
        "hasPrefix" => {
            arity(name, &args, 2)?;
            Bool(s(1).starts_with(&s(0)))
        }
        "hasSuffix" => {
            arity(name, &args, 2)?;
            Bool(s(1).ends_with(&s(0)))
        }
        "indent" | "nindent" => {
            arity(name, &args, 2)?;
            let text = indent(to_int(&args[0]), &s(1))?;
            Str(if name == "nindent" {
                format!("\n{text}")
            } else {
                text
            })
        }
        "replace" => {
            arity(name, &args, 3)?;
            Str(s(2).replace(&s(0), &s(1)))
        }
        "repeat" => {
            arity(name, &args, 2)?;
            let src = s(1);
            Str(src.repeat(bounded(to_int(&args[0]), src.len())?))
        }
        "int" => {
            arity(name, &args, 1)?;
            Int(to_int(&args[0]))
        }
        "float64" => {
            arity(name, &args, 1)?;
            Float(to_float(&args[0]))
        }
        "add" => Int(args.iter().map(to_int).fold(0i64, i64::wrapping_add)),
        "mul" => {
            at_least(name, &args, 1)?;
            Int(args.iter().map(to_int).fold(1i64, i64::wrapping_mul))
        }
        "sub" | "div" | "mod" => {
            arity(name, &args, 2)?;
            let (a, b) = (to_int(&args[0]), to_int(&args[1]));
            if b == 0 && name != "sub" {
                return Err(err("runtime error: integer divide by zero"));
            }
            Int(match name {
                "sub" => a.wrapping_sub(b),
                "div" => a.wrapping_div(b),
                _ => a.wrapping_rem(b),
            })
        }
        "addf" => Float(args.iter().map(to_float).sum()),
        "subf" | "mulf" | "divf" => {
            at_least(name, &args, 1)?;
            let first = to_float(&args[0]);
            Float(
                args[1..]
                    .iter()
                    .map(to_float)
                    .fold(first, |a, b| match name {
                        "subf" => a - b,
                        "mulf" => a * b,
                        _ => a / b,
                    }),
            )
        }
        "max" | "min" => {
            at_least(name, &args, 1)?;
            let values = args.iter().map(to_int);
            Int(if name == "max" {
                values.max()
            } else {
                values.min()
            }
            .unwrap_or(0))
        }
        "maxf" | "minf" => {
            at_least(name, &args, 1)?;
            let values = args.iter().map(to_float);
            Float(if name == "maxf" {
                values.fold(f64::MIN, f64::max)
            } else {
                values.fold(f64::MAX, f64::min)
            })
        }
        "ceil" => {
            arity(name, &args, 1)?;
            Float(to_float(&args[0]).ceil())
        }
        "floor" => {
            arity(name, &args, 1)?;
            Float(to_float(&args[0]).floor())
        }
        "round" => {
            at_least(name, &args, 2)?;
            let on = args.get(2).map_or(0.5, to_float);
            let pow = 10f64.powf(to_float(&args[1]));
            let digit = pow * to_float(&args[0]);
            let rounded = if digit.fract() >= on {
                digit.ceil()
            } else {
                digit.floor()
            };
            Float(rounded / pow)
        }
        "fromJson" => {
            arity(name, &args, 1)?;
            match serde_json::from_str::<serde_json::Value>(&s(0)) {
                Ok(v) => json_value(v),
                Err(_) => Str(String::new()),
            }
        }
        "default" => {
            at_least(name, &args, 1)?;
            match args.get(1) {
                Some(v) if v.truthy() => v.clone(),
                _ => args[0].clone(),
            }
        }
        other => return Err(err(format!("function {other:?} not defined"))),
    })
}
