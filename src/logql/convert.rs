//! Reading label values as numbers the way Loki does: Go's
//! `time.ParseDuration`, go-humanize's `ParseBytes`, `strconv.ParseFloat`,
//! and the label-key sanitising of Loki's parsers.

/// Reads a float as Go's `strconv.ParseFloat` does (decimal, exponent,
/// `Inf`, `NaN`); surrounding whitespace is an error, as in Go.
pub fn parse_float(text: &str) -> Option<f64> {
    if text.is_empty()
        || text.starts_with(char::is_whitespace)
        || text.ends_with(char::is_whitespace)
    {
        return None;
    }
    text.parse().ok()
}

/// Reads a Go duration (`1h2m3.5s`, `250ms`, `-1.5h`, `0`) as seconds.
/// Go's syntax has no days: `1d` is an error, as in Loki.
pub fn parse_go_duration(text: &str) -> Option<f64> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some(0.0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total_ns: f64 = 0.0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let number = &rest[..digits];
        if number.is_empty() || number == "." {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total_ns += value * unit;
        // Go's time.Duration is an int64 of nanoseconds.
        if total_ns > i64::MAX as f64 {
            return None;
        }
    }
    let seconds = total_ns.trunc() / 1e9;
    Some(if negative { -seconds } else { seconds })
}

/// Reads a humanized size as go-humanize's `ParseBytes` does: `42MB`,
/// `1.5 KiB`, `3k`, `1,000`, `2PB`, case-insensitive.
pub fn parse_humanized_bytes(text: &str) -> Option<f64> {
    let digits = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .unwrap_or(text.len());
    let number: f64 = text[..digits].replace(',', "").parse().ok()?;
    let unit = text[digits..].trim().to_ascii_lowercase();
    let scale: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "ki" | "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mi" | "mib" => 1024f64.powi(2),
        "g" | "gb" => 1e9,
        "gi" | "gib" => 1024f64.powi(3),
        "t" | "tb" => 1e12,
        "ti" | "tib" => 1024f64.powi(4),
        "p" | "pb" => 1e15,
        "pi" | "pib" => 1024f64.powi(5),
        "e" | "eb" => 1e18,
        "ei" | "eib" => 1024f64.powi(6),
        _ => return None,
    };
    let bytes = number * scale;
    // go-humanize answers a uint64.
    (bytes < u64::MAX as f64).then(|| bytes.trunc())
}

/// A parser's key as a label name: trimmed, `_` before a leading digit,
/// `_` for anything but ASCII letters, digits and `_` (Loki's
/// `sanitizeLabelKey`).
pub fn sanitize_key(key: &str) -> String {
    let key = key.trim();
    let mut out = String::with_capacity(key.len() + 1);
    if key.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    out
}

/// Whether `name` is a valid label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("250ms"), Some(0.25));
        assert_eq!(parse_go_duration("1h30m"), Some(5400.0));
        assert_eq!(parse_go_duration("1.5s"), Some(1.5));
        assert_eq!(parse_go_duration("-2m"), Some(-120.0));
        assert_eq!(parse_go_duration("24s30ms"), Some(24.03));
        assert_eq!(parse_go_duration("0"), Some(0.0));
        assert_eq!(parse_go_duration("10µs"), Some(0.00001));
        for bad in ["1d", "1w", "", "5", "ms", "1.5", " 1s", "1s "] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn humanized_bytes() {
        assert_eq!(parse_humanized_bytes("42MB"), Some(42e6));
        assert_eq!(parse_humanized_bytes("1.5KiB"), Some(1536.0));
        assert_eq!(parse_humanized_bytes("5 MiB"), Some(5.0 * 1048576.0));
        assert_eq!(parse_humanized_bytes("3k"), Some(3000.0));
        assert_eq!(parse_humanized_bytes("1G"), Some(1e9));
        assert_eq!(parse_humanized_bytes("2PB"), Some(2e15));
        assert_eq!(parse_humanized_bytes("1PiB"), Some(1024f64.powi(5)));
        assert_eq!(parse_humanized_bytes("1,024"), Some(1024.0));
        assert_eq!(parse_humanized_bytes("20"), Some(20.0));
        assert_eq!(parse_humanized_bytes("20 parsecs"), None);
        assert_eq!(parse_humanized_bytes("MB"), None);
        assert_eq!(parse_humanized_bytes("100EB"), None, "over a uint64");
    }

    #[test]
    fn keys_become_label_names() {
        assert_eq!(sanitize_key("a.b"), "a_b");
        assert_eq!(sanitize_key("User-Agent"), "User_Agent");
        assert_eq!(sanitize_key("1st"), "_1st");
        assert_eq!(sanitize_key(" x "), "x");
        assert!(is_label_name("_a1") && !is_label_name("1a") && !is_label_name(""));
    }
}
