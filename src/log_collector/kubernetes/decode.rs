//! Stage 1 of the Kubernetes path, decoding: container runtime log lines,
//! CRI (containerd, CRI-O) or Docker's json-file, into records.
//!
//! CRI: `<RFC3339Nano> <stdout|stderr> <P|F>[:tags] <message>` — `P` is a
//! piece of a longer line, `F` ends it (an unknown tag counts as full, as in
//! kubelet). Docker: `{"log":"…\n","stream":"stdout","time":"…"}` — a `log`
//! without a trailing newline is a piece. Runtimes cut at 16 KiB, possibly
//! inside a UTF-8 character, so pieces are joined as bytes (see `join`).

/// Which output a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One decoded runtime line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// ns since the epoch, from the line.
    pub timestamp: i64,
    /// stdout or stderr.
    pub stream: Stream,
    /// Whether more pieces of this line follow.
    pub partial: bool,
    /// The message bytes (for Docker, unescaped).
    pub message: std::borrow::Cow<'a, [u8]>,
}

/// Why a line could not be decoded (it is then kept as raw text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// No valid CRI prefix.
    Cri,
    /// Not a Docker json-file object.
    Docker,
}

/// Parses an RFC 3339 timestamp with optional fraction and offset into ns.
pub fn parse_rfc3339(text: &[u8]) -> Option<i64> {
    let digits = |s: &[u8]| -> Option<i64> {
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(s.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    if text.len() < 20
        || text[4] != b'-'
        || text[7] != b'-'
        || !matches!(text[10], b'T' | b't' | b' ')
        || text[13] != b':'
        || text[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (
        digits(&text[0..4])?,
        digits(&text[5..7])?,
        digits(&text[8..10])?,
    );
    let (hour, minute, second) = (
        digits(&text[11..13])?,
        digits(&text[14..16])?,
        digits(&text[17..19])?,
    );
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos = 0i64;
    if rest.first() == Some(&b'.') {
        let len = rest[1..].iter().take_while(|b| b.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        let frac = &rest[1..1 + len.min(9)];
        nanos = digits(frac)? * 10i64.pow(9 - frac.len() as u32);
        rest = &rest[1 + len..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let minutes = digits(&[*h1, *h2])? * 60 + digits(&[*m1, *m2])?;
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    // Days from civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Parses one CRI line.
pub fn parse_cri(line: &[u8]) -> Result<Record<'_>, Malformed> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let ts = parts.next().ok_or(Malformed::Cri)?;
    let stream = match parts.next().ok_or(Malformed::Cri)? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return Err(Malformed::Cri),
    };
    let tag = parts.next().ok_or(Malformed::Cri)?;
    // `<ts> stdout F` with nothing after is an empty message.
    let message = parts.next().unwrap_or(b"");
    let timestamp = parse_rfc3339(ts).ok_or(Malformed::Cri)?;
    // Only the first `:`-field of the tag counts; unknown tags are full lines.
    let partial = tag.split(|&b| b == b':').next() == Some(b"P");
    Ok(Record {
        timestamp,
        stream,
        partial,
        message: std::borrow::Cow::Borrowed(message),
    })
}

#[derive(serde::Deserialize)]
struct DockerLine<'a> {
    #[serde(borrow)]
    log: std::borrow::Cow<'a, str>,
    stream: &'a str,
    time: &'a str,
}

/// Parses one Docker json-file line.
pub fn parse_docker(line: &[u8]) -> Result<Record<'static>, Malformed> {
    let parsed: DockerLine<'_> = serde_json::from_slice(line).map_err(|_| Malformed::Docker)?;
    let stream = match parsed.stream {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return Err(Malformed::Docker),
    };
    let timestamp = parse_rfc3339(parsed.time.as_bytes()).ok_or(Malformed::Docker)?;
    let mut message = parsed.log.into_owned().into_bytes();
    let partial = message.last() != Some(&b'\n');
    if !partial {
        message.pop();
    }
    Ok(Record {
        timestamp,
        stream,
        partial,
        message: std::borrow::Cow::Owned(message),
    })
}

/// Which format a file is in, decided by its first line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Format {
    /// CRI.
    Cri,
    /// Docker json-file.
    Docker,
}

impl Format {
    /// Guesses from a line: Docker lines are JSON objects.
    pub fn detect(line: &[u8]) -> Self {
        if line.first() == Some(&b'{') {
            Format::Docker
        } else {
            Format::Cri
        }
    }

    /// Parses a line in this format.
    pub fn parse(self, line: &[u8]) -> Result<Record<'_>, Malformed> {
        match self {
            Format::Cri => parse_cri(line),
            Format::Docker => parse_docker(line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_variants() {
        assert_eq!(parse_rfc3339(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339(b"2023-11-14T22:13:20.123456789Z"),
            Some(1_700_000_000_123_456_789)
        );
        // containerd trims trailing zeros.
        assert_eq!(
            parse_rfc3339(b"2023-11-14T22:13:20.1Z"),
            Some(1_700_000_000_100_000_000)
        );
        // CRI-O writes local time with an offset.
        assert_eq!(
            parse_rfc3339(b"2023-11-15T00:13:20.5+02:00"),
            Some(1_700_000_000_500_000_000)
        );
        assert_eq!(
            parse_rfc3339(b"2000-02-29T12:00:00Z"),
            Some(951_825_600_000_000_000)
        );
        for bad in [
            &b"2023-13-14T22:13:20Z"[..],
            b"2023-11-14 22:13",
            b"yesterday",
            b"2023-11-14T22:13:20",
            b"2023-11-14T22:13:20.Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn cri_lines() {
        let r = parse_cri(b"2023-11-14T22:13:20.5Z stdout F hello world").unwrap();
        assert_eq!(
            (r.stream, r.partial, &*r.message),
            (Stream::Stdout, false, &b"hello world"[..])
        );
        assert!(
            parse_cri(b"2023-11-14T22:13:20Z stderr P:x:y part")
                .unwrap()
                .partial
        );
        assert!(
            !parse_cri(b"2023-11-14T22:13:20Z stderr X odd tag")
                .unwrap()
                .partial
        );
        // A trailing space is a valid empty message; tabs and \r are kept.
        assert_eq!(
            &*parse_cri(b"2023-11-14T22:13:20Z stdout F ")
                .unwrap()
                .message,
            b""
        );
        assert_eq!(
            &*parse_cri(b"2023-11-14T22:13:20Z stdout F a\tb\r")
                .unwrap()
                .message,
            b"a\tb\r"
        );
        for bad in [
            &b"not a cri line"[..],
            b"2023-11-14T22:13:20Z stdin F x",
            b"",
            b"\xff\xfe",
        ] {
            assert!(parse_cri(bad).is_err());
        }
    }

    #[test]
    fn docker_lines() {
        let r = parse_docker(br#"{"log":"hello \u00e9\n","stream":"stderr","time":"2023-11-14T22:13:20.000000001Z"}"#).unwrap();
        assert_eq!(
            (r.stream, r.partial, r.timestamp),
            (Stream::Stderr, false, 1_700_000_000_000_000_001)
        );
        assert_eq!(&*r.message, "hello é".as_bytes());
        assert!(
            parse_docker(
                br#"{"log":"no newline","stream":"stdout","time":"2023-11-14T22:13:20Z"}"#
            )
            .unwrap()
            .partial
        );
        assert!(parse_docker(b"{broken").is_err());
        assert_eq!(Format::detect(b"{\"log\""), Format::Docker);
        assert_eq!(Format::detect(b"2023-"), Format::Cri);
    }
}
