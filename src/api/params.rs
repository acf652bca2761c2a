//! Query-string parameters as Loki reads them: times as ns integers, seconds
//! (float or ≤ 10 digits) or RFC 3339; durations as `5m` or float seconds.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;

use super::ApiError;
use crate::log_database::{TimeRange, now_ns};

/// A handler's parameters from the query string alone (GET routes, and
/// the websocket tail, whose body must stay untouched).
pub struct QueryParams(pub Params);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let mut params = Params::parse(parts.uri.query().unwrap_or(""))?;
        params.pin_now();
        Ok(Self(params))
    }
}

/// A handler's parameters from the query string plus a form body: Loki
/// accepts GET and POST alike on its query routes.
pub struct FormParams(pub Params);

impl<S: Send + Sync> FromRequest<S> for FormParams {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let mut params = Params::parse(request.uri().query().unwrap_or(""))?;
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError {
                // 413 for a body over the limit, 400 for the rest.
                status: e.status(),
                message: format!("cannot read the request body: {}", e.body_text()),
            })?;
        if !body.is_empty() {
            let text = std::str::from_utf8(&body)
                .map_err(|_| ApiError::bad_request("the form body is not UTF-8".into()))?;
            params.extend(Params::parse(text)?);
        }
        params.pin_now();
        Ok(Self(params))
    }
}

/// Parameters of a request, repeated keys kept (`match[]`).
#[derive(Debug, Default, Clone)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parses a query string or form body. A value that is not UTF-8
    /// once percent-decoded is refused rather than mangled into U+FFFD: a
    /// matcher would otherwise silently match something else.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let decode = |part: &str| -> Result<String, ApiError> {
            let spaced = part.replace('+', " ");
            percent_encoding::percent_decode_str(&spaced)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| {
                    ApiError::bad_request(format!(
                        "malformed query string: {part:?} is not valid UTF-8 once decoded"
                    ))
                })
        };
        let mut pairs = Vec::new();
        for piece in text.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
            pairs.push((decode(key)?, decode(value)?));
        }
        Ok(Self(pairs))
    }

    /// Every pair, as they came (for asking peers the same).
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// Fixes "now" for the request: `end` and `time` default to the moment
    /// the request arrived, so the peers asked the same question answer
    /// for the same instant rather than each for its own.
    fn pin_now(&mut self) {
        let now = now_ns().to_string();
        for key in ["end", "time"] {
            if self.get(key).is_none_or(str::is_empty) {
                self.0.push((key.to_owned(), now.clone()));
            }
        }
    }

    /// Adds one pair.
    pub fn push(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }

    /// Adds the pairs of another (a POST body).
    pub fn extend(&mut self, other: Params) {
        self.0.extend(other.0);
    }

    /// The last value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A time parameter, in ns.
    pub fn time(&self, key: &str) -> Result<Option<i64>, ApiError> {
        self.get(key)
            .filter(|v| !v.is_empty())
            .map(|v| parse_time(key, v))
            .transpose()
    }

    /// A duration parameter, in ns.
    pub fn duration(&self, key: &str) -> Result<Option<i64>, ApiError> {
        self.get(key)
            .filter(|v| !v.is_empty())
            .map(|v| parse_duration(key, v))
            .transpose()
    }

    /// A positive integer parameter.
    pub fn number(&self, key: &str) -> Result<Option<usize>, ApiError> {
        self.get(key)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<usize>().map_err(|_| {
                    ApiError::bad_request(format!("{key}={v:?} is not a non-negative integer"))
                })
            })
            .transpose()
    }

    /// `start` through `end` (ns, both included, as Loki reads them): `end`
    /// defaults to now, `start` to `since` before `end`, or `default_span`
    /// before it. Checks `start <= end`.
    pub fn range(&self, default_span: i64) -> Result<TimeRange, ApiError> {
        let end = self.time("end")?.unwrap_or_else(now_ns);
        let start = match (self.time("start")?, self.duration("since")?) {
            (Some(start), _) => start,
            (None, Some(since)) => end.saturating_sub(since),
            (None, None) => end.saturating_sub(default_span),
        };
        if start > end {
            return Err(ApiError::bad_request(
                "the start of the time range is after its end".into(),
            ));
        }
        Ok(TimeRange::through(start, end))
    }

    /// The entries a log query reads: from `start` up to but not
    /// including `end`, as Loki's API documents (a metric query's steps,
    /// in [`range`](Self::range), do include `end`).
    pub fn log_range(&self, default_span: i64) -> Result<TimeRange, ApiError> {
        let range = self.range(default_span)?;
        Ok(TimeRange::new(range.start, range.last().max(range.start)))
    }
}

/// Parses a time: integer ns (or seconds if it has at most 10 digits, as
/// Loki does), float seconds, or RFC 3339.
pub fn parse_time(key: &str, value: &str) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "{key}={value:?} is not a time: use nanoseconds since the epoch, seconds (1700000000.5) or RFC 3339 (2026-11-22T10:00:00Z)"
        ))
    };
    if let Ok(n) = value.parse::<i64>() {
        let digits = value.trim_start_matches('-').len();
        return if digits <= 10 {
            n.checked_mul(1_000_000_000).ok_or_else(bad)
        } else {
            Ok(n)
        };
    }
    if let Ok(secs) = value.parse::<f64>() {
        if secs.is_finite() && secs.abs() < 9.2e9 {
            return Ok((secs * 1e9).round() as i64);
        }
        return Err(bad());
    }
    let t = humantime::parse_rfc3339_weak(value).map_err(|_| bad())?;
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).map_err(|_| bad()),
        Err(e) => i64::try_from(e.duration().as_nanos())
            .map(|n| -n)
            .map_err(|_| bad()),
    }
}

/// Parses a duration: `5m`, `1h30m`, `250ms`, or float seconds.
pub fn parse_duration(key: &str, value: &str) -> Result<i64, ApiError> {
    let parsed = match value.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Some((secs * 1e9) as i64),
        Ok(_) => None,
        Err(_) => crate::logql::parse_duration(value),
    };
    parsed.ok_or_else(|| {
        ApiError::bad_request(format!(
            "{key}={value:?} is not a duration: use 5m, 1h30m, 250ms or seconds"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_loki_form() {
        assert_eq!(
            parse_time("t", "1700000000").unwrap(),
            1_700_000_000_000_000_000
        );
        assert_eq!(
            parse_time("t", "1700000000123456789").unwrap(),
            1_700_000_000_123_456_789
        );
        assert_eq!(
            parse_time("t", "1700000000.5").unwrap(),
            1_700_000_000_500_000_000
        );
        assert_eq!(
            parse_time("t", "2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000_000_000
        );
        assert_eq!(
            parse_time("t", "2023-11-14T22:13:20.25Z").unwrap(),
            1_700_000_000_250_000_000
        );
        assert!(
            parse_time("start", "yesterday")
                .unwrap_err()
                .to_string()
                .contains("RFC 3339")
        );
    }

    #[test]
    fn durations_and_repeated_keys() {
        assert_eq!(parse_duration("step", "15").unwrap(), 15_000_000_000);
        assert_eq!(parse_duration("step", "0.5").unwrap(), 500_000_000);
        assert_eq!(parse_duration("since", "1h30m").unwrap(), 5_400_000_000_000);
        assert!(parse_duration("since", "-5").is_err());
        let p = Params::parse("match%5B%5D=%7Ba%3D%22b%22%7D&match[]={c=\"d\"}&limit=5").unwrap();
        assert_eq!(p.all("match[]"), vec![r#"{a="b"}"#, r#"{c="d"}"#]);
        assert_eq!(p.number("limit").unwrap(), Some(5));
        assert!(Params::parse("start=20&end=10").unwrap().range(0).is_err());
        assert_eq!(
            Params::parse("q=a+b%20c&flag").unwrap().get("q"),
            Some("a b c")
        );
    }

    #[test]
    fn values_that_are_not_utf8_are_refused() {
        let e = Params::parse("query=%7Bapp%3D%22%FF%22%7D").unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(e.message.contains("not valid UTF-8"), "{}", e.message);
        assert_eq!(
            Params::parse("query=%C3%A9").unwrap().get("query"),
            Some("é")
        );
    }
}
