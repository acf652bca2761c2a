//! Tokens of LogQL, with their positions for error messages.

use super::ParseError;

/// One token.
#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    /// `{`
    LBrace,
    /// `}`
    RBrace,
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `[`
    LBracket,
    /// `]`
    RBracket,
    /// `,`
    Comma,
    /// `|`
    Pipe,
    /// `|=`
    PipeEq,
    /// `|~`
    PipeTilde,
    /// `!=`
    Neq,
    /// `!~`
    NotTilde,
    /// `|>`
    PipeGt,
    /// `!>`
    NotGt,
    /// `--strict`, `--keep-empty`.
    Flag(String),
    /// `=`
    Eq,
    /// `=~`
    EqTilde,
    /// `==`
    EqEq,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `+`
    Plus,
    /// `-`
    Minus,
    /// `*`
    Star,
    /// `/`
    Slash,
    /// `%`
    Percent,
    /// `^`
    Caret,
    /// A name.
    Ident(String),
    /// A string literal, unescaped.
    Str(String),
    /// A number.
    Num(f64),
    /// A duration, in ns.
    Duration(i64),
    /// A byte size.
    Bytes(u64),
    /// End of input.
    Eof,
}

impl Tok {
    /// How the token reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("'{s}'"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Num(n) => format!("number {n}"),
            Tok::Duration(_) => "a duration".into(),
            Tok::Bytes(_) => "a byte size".into(),
            Tok::Flag(f) => format!("'--{f}'"),
            Tok::Eof => "end of query".into(),
            other => format!("'{}'", symbol(other)),
        }
    }
}

fn symbol(t: &Tok) -> &'static str {
    match t {
        Tok::LBrace => "{",
        Tok::RBrace => "}",
        Tok::LParen => "(",
        Tok::RParen => ")",
        Tok::LBracket => "[",
        Tok::RBracket => "]",
        Tok::Comma => ",",
        Tok::Pipe => "|",
        Tok::PipeEq => "|=",
        Tok::PipeTilde => "|~",
        Tok::Neq => "!=",
        Tok::NotTilde => "!~",
        Tok::PipeGt => "|>",
        Tok::NotGt => "!>",
        Tok::Eq => "=",
        Tok::EqTilde => "=~",
        Tok::EqEq => "==",
        Tok::Lt => "<",
        Tok::Le => "<=",
        Tok::Gt => ">",
        Tok::Ge => ">=",
        Tok::Plus => "+",
        Tok::Minus => "-",
        Tok::Star => "*",
        Tok::Slash => "/",
        Tok::Percent => "%",
        Tok::Caret => "^",
        _ => "?",
    }
}

/// A token and where it starts (1-based line and column).
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    /// The token.
    pub tok: Tok,
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

/// Parses a duration like `5m`, `1h30m`, `250ms` into ns.
pub fn parse_duration(text: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86_400e9,
            "w" => 604_800e9,
            "y" => 31_536_000e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add((number * unit) as i64)?;
    }
    Some(total)
}

/// Parses a byte size literal like `1.5MB`, `20KiB`, `2PB`: a number and
/// a unit ending in `B` (go-humanize's units, case-insensitive).
pub fn parse_bytes(text: &str) -> Option<f64> {
    if !text.ends_with(['b', 'B']) {
        return None;
    }
    super::convert::parse_humanized_bytes(text)
}

/// Splits a query into tokens.
pub fn lex(input: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    let err = |line, col, message: String| ParseError { line, col, message };
    while i < chars.len() {
        let c = chars[i];
        let (start_line, start_col) = (line, col);
        let advance = |n: usize, i: &mut usize, col: &mut usize| {
            *i += n;
            *col += n;
        };
        if c == '\n' {
            i += 1;
            line += 1;
            col = 1;
            continue;
        }
        if c.is_whitespace() {
            advance(1, &mut i, &mut col);
            continue;
        }
        if c == '#' {
            // A comment, to the end of the line.
            while i < chars.len() && chars[i] != '\n' {
                advance(1, &mut i, &mut col);
            }
            continue;
        }
        let next = chars.get(i + 1).copied();
        if c == '-' && next == Some('-') {
            let mut j = i + 2;
            while j < chars.len()
                && (chars[j].is_ascii_alphanumeric() || chars[j] == '-' || chars[j] == '_')
            {
                j += 1;
            }
            if j > i + 2 {
                out.push(Token {
                    tok: Tok::Flag(chars[i + 2..j].iter().collect()),
                    line: start_line,
                    col: start_col,
                });
                advance(j - i, &mut i, &mut col);
                continue;
            }
        }
        let two = |t: Tok| (t, 2);
        let (tok, len) = match (c, next) {
            ('|', Some('=')) => two(Tok::PipeEq),
            ('|', Some('~')) => two(Tok::PipeTilde),
            ('|', Some('>')) => two(Tok::PipeGt),
            ('!', Some('>')) => two(Tok::NotGt),
            ('!', Some('=')) => two(Tok::Neq),
            ('!', Some('~')) => two(Tok::NotTilde),
            ('=', Some('~')) => two(Tok::EqTilde),
            ('=', Some('=')) => two(Tok::EqEq),
            ('<', Some('=')) => two(Tok::Le),
            ('>', Some('=')) => two(Tok::Ge),
            ('{', _) => (Tok::LBrace, 1),
            ('}', _) => (Tok::RBrace, 1),
            ('(', _) => (Tok::LParen, 1),
            (')', _) => (Tok::RParen, 1),
            ('[', _) => (Tok::LBracket, 1),
            (']', _) => (Tok::RBracket, 1),
            (',', _) => (Tok::Comma, 1),
            ('|', _) => (Tok::Pipe, 1),
            ('=', _) => (Tok::Eq, 1),
            ('<', _) => (Tok::Lt, 1),
            ('>', _) => (Tok::Gt, 1),
            ('+', _) => (Tok::Plus, 1),
            ('-', _) => (Tok::Minus, 1),
            ('*', _) => (Tok::Star, 1),
            ('/', _) => (Tok::Slash, 1),
            ('%', _) => (Tok::Percent, 1),
            ('^', _) => (Tok::Caret, 1),
            ('"', _) => {
                let mut s = String::new();
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => {
                            return Err(err(start_line, start_col, "unterminated string".into()));
                        }
                        Some('"') => break,
                        Some('\\') => {
                            let escaped = match chars.get(j + 1) {
                                Some('n') => '\n',
                                Some('t') => '\t',
                                Some('r') => '\r',
                                Some('"') => '"',
                                Some('\\') => '\\',
                                Some(other) => {
                                    // Keep unknown escapes for the regex engine (`\d`, `\.`).
                                    s.push('\\');
                                    *other
                                }
                                None => {
                                    return Err(err(
                                        start_line,
                                        start_col,
                                        "unterminated string".into(),
                                    ));
                                }
                            };
                            s.push(escaped);
                            j += 2;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            j += 1;
                        }
                    }
                }
                (Tok::Str(s), j + 1 - i)
            }
            ('`', _) => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&ch| ch == '`')
                    .ok_or_else(|| err(start_line, start_col, "unterminated raw string".into()))?;
                let s: String = chars[i + 1..i + 1 + end].iter().collect();
                let newlines = s.matches('\n').count();
                if newlines > 0 {
                    line += newlines;
                }
                (Tok::Str(s), end + 2)
            }
            (c, _)
                if c.is_ascii_digit() || (c == '.' && next.is_some_and(|n| n.is_ascii_digit())) =>
            {
                let mut j = i;
                while j < chars.len()
                    && (chars[j].is_ascii_alphanumeric() || chars[j] == '.' || chars[j] == 'µ')
                {
                    // An exponent sign belongs to the number: 1e-3.
                    j += 1;
                    if j < chars.len()
                        && (chars[j] == '-' || chars[j] == '+')
                        && matches!(chars[j - 1], 'e' | 'E')
                        && chars[i..j - 1]
                            .iter()
                            .all(|c| c.is_ascii_digit() || *c == '.')
                    {
                        j += 1;
                    }
                }
                let text: String = chars[i..j].iter().collect();
                let tok = if let Ok(n) = text.parse::<f64>() {
                    Tok::Num(n)
                } else if let Some(d) = parse_duration(&text) {
                    Tok::Duration(d)
                } else if let Some(b) = parse_bytes(&text) {
                    Tok::Bytes(b as u64)
                } else {
                    return Err(err(
                        start_line,
                        start_col,
                        format!("'{text}' is not a number, duration or byte size"),
                    ));
                };
                (tok, j - i)
            }
            (c, _) if c.is_ascii_alphabetic() || c == '_' => {
                let mut j = i;
                while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                (Tok::Ident(chars[i..j].iter().collect()), j - i)
            }
            (c, _) => {
                return Err(err(
                    start_line,
                    start_col,
                    format!("unexpected character '{c}'"),
                ));
            }
        };
        out.push(Token {
            tok,
            line: start_line,
            col: start_col,
        });
        advance(len, &mut i, &mut col);
    }
    out.push(Token {
        tok: Tok::Eof,
        line,
        col,
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_positions() {
        let toks = lex("{app=~\"a.*\"} |= `raw\\d` [5m]").unwrap();
        let kinds: Vec<Tok> = toks.iter().map(|t| t.tok.clone()).collect();
        assert_eq!(
            kinds,
            vec![
                Tok::LBrace,
                Tok::Ident("app".into()),
                Tok::EqTilde,
                Tok::Str("a.*".into()),
                Tok::RBrace,
                Tok::PipeEq,
                Tok::Str("raw\\d".into()),
                Tok::LBracket,
                Tok::Duration(300_000_000_000),
                Tok::RBracket,
                Tok::Eof
            ]
        );
        assert_eq!((toks[5].line, toks[5].col), (1, 14));
    }

    #[test]
    fn durations_numbers_and_bytes() {
        assert_eq!(parse_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("250ms"), Some(250_000_000));
        assert_eq!(parse_duration("5x"), None);
        let toks = lex("1.5 2e3 20MB 1e-3").unwrap();
        assert_eq!(toks[0].tok, Tok::Num(1.5));
        assert_eq!(toks[1].tok, Tok::Num(2000.0));
        assert_eq!(toks[2].tok, Tok::Bytes(20_000_000));
        assert_eq!(toks[3].tok, Tok::Num(0.001));
        assert!(lex("\"open").is_err());
        let toks = lex("{a=\"b\"} # all of it\n |> \"<_>\" | logfmt --keep-empty").unwrap();
        let kinds: Vec<Tok> = toks.iter().map(|t| t.tok.clone()).collect();
        assert!(kinds.contains(&Tok::PipeGt));
        assert!(kinds.contains(&Tok::Flag("keep-empty".into())));
        assert_eq!(toks[5].line, 2, "the comment ends at the newline");
    }
}
