//! Go's `fmt.Sprintf` verbs for `printf`: `%v %s %d %f %e %g %q %x %X %o
//! %b %t %c %%`, with flags `-+ 0#`, width and precision.

use super::value::{Value, format_float};
use super::{Context, MAX_OUTPUT};

#[derive(Default)]
struct Spec {
    minus: bool,
    plus: bool,
    space: bool,
    zero: bool,
    sharp: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

fn pad(spec: &Spec, body: String, numeric: bool) -> String {
    let width = spec.width.unwrap_or(0).min(MAX_OUTPUT);
    let len = body.chars().count();
    if len >= width {
        return body;
    }
    let fill = width - len;
    if spec.minus {
        return body + &" ".repeat(fill);
    }
    if spec.zero && numeric {
        let (sign, digits) = match body.chars().next() {
            Some(c @ ('-' | '+' | ' ')) => (c.to_string(), body[1..].to_owned()),
            _ => (String::new(), body),
        };
        return sign + &"0".repeat(fill) + &digits;
    }
    " ".repeat(fill) + &body
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Bool(_) => None,
        Value::Float(f) if f.fract() == 0.0 => Some(*f as i64),
        Value::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_float(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn signed(spec: &Spec, negative: bool, digits: String) -> String {
    let sign = if negative {
        "-"
    } else if spec.plus {
        "+"
    } else if spec.space {
        " "
    } else {
        ""
    };
    format!("{sign}{digits}")
}

fn bad(verb: char, v: &Value, context: &dyn Context) -> String {
    let kind = match v {
        Value::Str(_) => "string",
        Value::Int(_) => "int",
        Value::Float(_) => "float64",
        Value::Bool(_) => "bool",
        _ => "value",
    };
    format!("%!{verb}({kind}={})", v.render(context))
}

fn one(verb: char, spec: &Spec, v: &Value, context: &dyn Context) -> String {
    match verb {
        'v' | 's' => {
            let mut s = v.render(context);
            if let Some(p) = spec.precision {
                s = s.chars().take(p).collect();
            }
            pad(spec, s, false)
        }
        'q' => pad(spec, format!("{:?}", v.text(context)), false),
        't' => match v {
            Value::Bool(b) => pad(spec, b.to_string(), false),
            other => bad(verb, other, context),
        },
        'd' => match as_int(v) {
            Some(i) => pad(
                spec,
                signed(spec, i < 0, i.unsigned_abs().to_string()),
                true,
            ),
            None => bad(verb, v, context),
        },
        'c' => match as_int(v).and_then(|i| char::from_u32(i as u32)) {
            Some(c) => pad(spec, c.to_string(), false),
            None => bad(verb, v, context),
        },
        'x' | 'X' | 'o' | 'b' => {
            let body = match (v, as_int(v)) {
                (Value::Str(s), _) if verb == 'x' || verb == 'X' => {
                    s.bytes().map(|b| format!("{b:02x}")).collect::<String>()
                }
                (_, Some(i)) => {
                    let a = i.unsigned_abs();
                    let digits = match verb {
                        'x' => format!("{a:x}"),
                        'X' => format!("{a:X}"),
                        'o' => format!("{a:o}"),
                        _ => format!("{a:b}"),
                    };
                    let prefix = match (spec.sharp, verb) {
                        (true, 'x') => "0x",
                        (true, 'X') => "0X",
                        (true, 'o') => "0",
                        _ => "",
                    };
                    signed(spec, i < 0, format!("{prefix}{digits}"))
                }
                _ => return bad(verb, v, context),
            };
            let body = if verb == 'X' {
                body.to_uppercase()
            } else {
                body
            };
            pad(spec, body, true)
        }
        'f' | 'F' | 'e' | 'E' | 'g' | 'G' => match as_float(v) {
            Some(f) => {
                let p = spec.precision.map(|p| p.min(64));
                let body = match verb {
                    'f' | 'F' => format!("{:.*}", p.unwrap_or(6), f.abs()),
                    'e' | 'E' => {
                        let s = format!("{:.*e}", p.unwrap_or(6), f.abs());
                        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
                        let e: i32 = e.parse().unwrap_or(0);
                        let s = format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
                        if verb == 'E' { s.to_uppercase() } else { s }
                    }
                    _ => match p {
                        None => format_float(f.abs()),
                        Some(p) => {
                            let p = p.max(1);
                            let exp = if f == 0.0 {
                                0
                            } else {
                                f.abs().log10().floor() as i32
                            };
                            if exp < -4 || exp >= p as i32 {
                                let s = format!("{:.*e}", p - 1, f.abs());
                                let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
                                let m = if m.contains('.') {
                                    m.trim_end_matches('0').trim_end_matches('.')
                                } else {
                                    m
                                };
                                let e: i32 = e.parse().unwrap_or(0);
                                format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
                            } else {
                                let decimals = (p as i32 - 1 - exp).max(0) as usize;
                                let s = format!("{:.*}", decimals, f.abs());
                                if s.contains('.') {
                                    s.trim_end_matches('0').trim_end_matches('.').to_owned()
                                } else {
                                    s
                                }
                            }
                        }
                    },
                };
                pad(
                    spec,
                    signed(spec, f.is_sign_negative() && f != 0.0, body),
                    true,
                )
            }
            None => bad(verb, v, context),
        },
        other => format!("%!{other}(BADVERB)"),
    }
}

/// Formats `args` with a Go format string.
pub fn sprintf(format: &str, args: &[Value], context: &dyn Context) -> String {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    let mut next = 0;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&f) = chars.peek() {
            match f {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                ' ' => spec.space = true,
                '0' => spec.zero = true,
                '#' => spec.sharp = true,
                _ => break,
            }
            chars.next();
        }
        let number = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
            let mut n: Option<usize> = None;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                n = Some(n.unwrap_or(0).saturating_mul(10).saturating_add(d as usize));
                chars.next();
            }
            n
        };
        spec.width = number(&mut chars);
        if chars.peek() == Some(&'.') {
            chars.next();
            spec.precision = Some(number(&mut chars).unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        match args.get(next) {
            Some(v) => out.push_str(&one(verb, &spec, v, context)),
            None => out.push_str(&format!("%!{verb}(MISSING)")),
        }
        next += 1;
        if out.len() > MAX_OUTPUT {
            break;
        }
    }
    if next < args.len() {
        let extra: Vec<String> = args[next..]
            .iter()
            .map(|v| format!("string={}", v.render(context)))
            .collect();
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    out
}
