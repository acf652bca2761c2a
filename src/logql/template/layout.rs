//! Go's time layouts (`2006-01-02T15:04:05Z07:00`), for `date`, `toDate`
//! and printing a time, on top of chrono's calendar.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Timelike};

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// The tokens of a layout, longest first where they share a prefix.
#[derive(Clone, Debug, PartialEq)]
enum Item {
    Lit(String),
    LongMonth,
    Month,
    NumMonth,
    ZeroMonth,
    LongWeekday,
    Weekday,
    Day,
    UnderDay,
    ZeroDay,
    YearDay,
    Hour,
    Hour12,
    ZeroHour12,
    Minute,
    ZeroMinute,
    Second,
    ZeroSecond,
    LongYear,
    Year,
    PM(bool),
    ZoneName,
    /// An offset: with `Z` for UTC, with colons, with seconds, hours only.
    Offset {
        z: bool,
        colon: bool,
        seconds: bool,
        hours_only: bool,
    },
    /// `.000` / `,999`: digits, trimmed of trailing zeros when `trim`.
    Fraction {
        digits: usize,
        trim: bool,
    },
}

fn items(layout: &str) -> Vec<Item> {
    const TABLE: &[(&str, Item)] = &[
        ("January", Item::LongMonth),
        ("Jan", Item::Month),
        ("Monday", Item::LongWeekday),
        ("Mon", Item::Weekday),
        ("MST", Item::ZoneName),
        ("2006", Item::LongYear),
        (
            "Z07:00:00",
            Item::Offset {
                z: true,
                colon: true,
                seconds: true,
                hours_only: false,
            },
        ),
        (
            "Z070000",
            Item::Offset {
                z: true,
                colon: false,
                seconds: true,
                hours_only: false,
            },
        ),
        (
            "Z07:00",
            Item::Offset {
                z: true,
                colon: true,
                seconds: false,
                hours_only: false,
            },
        ),
        (
            "Z0700",
            Item::Offset {
                z: true,
                colon: false,
                seconds: false,
                hours_only: false,
            },
        ),
        (
            "Z07",
            Item::Offset {
                z: true,
                colon: false,
                seconds: false,
                hours_only: true,
            },
        ),
        (
            "-07:00:00",
            Item::Offset {
                z: false,
                colon: true,
                seconds: true,
                hours_only: false,
            },
        ),
        (
            "-070000",
            Item::Offset {
                z: false,
                colon: false,
                seconds: true,
                hours_only: false,
            },
        ),
        (
            "-07:00",
            Item::Offset {
                z: false,
                colon: true,
                seconds: false,
                hours_only: false,
            },
        ),
        (
            "-0700",
            Item::Offset {
                z: false,
                colon: false,
                seconds: false,
                hours_only: false,
            },
        ),
        (
            "-07",
            Item::Offset {
                z: false,
                colon: false,
                seconds: false,
                hours_only: true,
            },
        ),
        ("002", Item::YearDay),
        ("01", Item::ZeroMonth),
        ("02", Item::ZeroDay),
        ("03", Item::ZeroHour12),
        ("04", Item::ZeroMinute),
        ("05", Item::ZeroSecond),
        ("06", Item::Year),
        ("15", Item::Hour),
        ("_2", Item::UnderDay),
        ("PM", Item::PM(true)),
        ("pm", Item::PM(false)),
        ("1", Item::NumMonth),
        ("2", Item::Day),
        ("3", Item::Hour12),
        ("4", Item::Minute),
        ("5", Item::Second),
    ];
    let mut out = Vec::new();
    let mut rest = layout;
    'outer: while !rest.is_empty() {
        // `.000` / `.999` (or with a comma) after a seconds field.
        if let Some(sep) = rest.chars().next().filter(|c| *c == '.' || *c == ',') {
            let tail = &rest[1..];
            let digit = tail.chars().next();
            if let Some(d @ ('0' | '9')) = digit {
                let n = tail.chars().take_while(|c| *c == d).count();
                let after = tail[n..].chars().next();
                if matches!(out.last(), Some(Item::Second | Item::ZeroSecond))
                    && after.is_none_or(|c| !c.is_ascii_digit())
                {
                    let _ = sep;
                    out.push(Item::Fraction {
                        digits: n,
                        trim: d == '9',
                    });
                    rest = &tail[n..];
                    continue;
                }
            }
        }
        for (token, item) in TABLE {
            if let Some(after) = rest.strip_prefix(token) {
                // `Jan` / `Mon` must not be the start of a longer word.
                out.push(item.clone());
                rest = after;
                continue 'outer;
            }
        }
        let c = rest.chars().next().expect("rest is not empty");
        match out.last_mut() {
            Some(Item::Lit(s)) => s.push(c),
            _ => out.push(Item::Lit(c.to_string())),
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn datetime(ns: i64, offset: i32) -> DateTime<FixedOffset> {
    let zone =
        FixedOffset::east_opt(offset).unwrap_or(FixedOffset::east_opt(0).expect("0 is valid"));
    zone.timestamp_nanos(ns)
}

fn offset_text(offset: i32, z: bool, colon: bool, seconds: bool, hours_only: bool) -> String {
    if z && offset == 0 {
        return "Z".into();
    }
    let sign = if offset < 0 { '-' } else { '+' };
    let a = offset.unsigned_abs();
    let (h, m, s) = (a / 3600, a / 60 % 60, a % 60);
    let sep = if colon { ":" } else { "" };
    let mut out = format!("{sign}{h:02}");
    if !hours_only {
        out.push_str(&format!("{sep}{m:02}"));
    }
    if seconds {
        out.push_str(&format!("{sep}{s:02}"));
    }
    out
}

fn zone_name(offset: i32) -> String {
    if offset == 0 {
        "UTC".into()
    } else {
        offset_text(offset, false, false, false, false)
    }
}

/// Formats `ns` (in a zone `offset` seconds east of UTC) with a Go layout.
pub fn format(ns: i64, offset: i32, layout: &str) -> String {
    let t = datetime(ns, offset);
    let mut out = String::new();
    for item in items(layout) {
        let text = match item {
            Item::Lit(s) => s,
            Item::LongMonth => MONTHS[t.month0() as usize].into(),
            Item::Month => MONTHS[t.month0() as usize][..3].into(),
            Item::NumMonth => t.month().to_string(),
            Item::ZeroMonth => format!("{:02}", t.month()),
            Item::LongWeekday => DAYS[t.weekday().num_days_from_sunday() as usize].into(),
            Item::Weekday => DAYS[t.weekday().num_days_from_sunday() as usize][..3].into(),
            Item::Day => t.day().to_string(),
            Item::UnderDay => format!("{:>2}", t.day()),
            Item::ZeroDay => format!("{:02}", t.day()),
            Item::YearDay => format!("{:03}", t.ordinal()),
            Item::Hour => format!("{:02}", t.hour()),
            Item::Hour12 => (if t.hour().is_multiple_of(12) {
                12
            } else {
                t.hour() % 12
            })
            .to_string(),
            Item::ZeroHour12 => format!(
                "{:02}",
                if t.hour().is_multiple_of(12) {
                    12
                } else {
                    t.hour() % 12
                }
            ),
            Item::Minute => t.minute().to_string(),
            Item::ZeroMinute => format!("{:02}", t.minute()),
            Item::Second => t.second().to_string(),
            Item::ZeroSecond => format!("{:02}", t.second()),
            Item::LongYear => format!("{:04}", t.year()),
            Item::Year => format!("{:02}", t.year().rem_euclid(100)),
            Item::PM(upper) => match (t.hour() >= 12, upper) {
                (true, true) => "PM".into(),
                (true, false) => "pm".into(),
                (false, true) => "AM".into(),
                (false, false) => "am".into(),
            },
            Item::ZoneName => zone_name(offset),
            Item::Offset {
                z,
                colon,
                seconds,
                hours_only,
            } => offset_text(offset, z, colon, seconds, hours_only),
            Item::Fraction { digits, trim } => {
                let nanos = format!("{:09}", t.nanosecond() % 1_000_000_000);
                let mut frac = nanos[..digits.min(9)].to_owned();
                if trim {
                    frac = frac.trim_end_matches('0').to_owned();
                }
                if frac.is_empty() {
                    String::new()
                } else {
                    format!(".{frac}")
                }
            }
        };
        out.push_str(&text);
    }
    out
}

/// Go's `Time.String()`: `2006-01-02 15:04:05.999999999 -0700 MST`.
pub fn go_string(ns: i64, offset: i32) -> String {
    format(ns, offset, "2006-01-02 15:04:05.999999999 -0700 MST")
}

fn take_digits(text: &str, min: usize, max: usize) -> Option<(i64, &str)> {
    let n = text
        .chars()
        .take(max)
        .take_while(|c| c.is_ascii_digit())
        .count();
    if n < min {
        return None;
    }
    Some((text[..n].parse().ok()?, &text[n..]))
}

fn take_word<'a>(text: &'a str, words: &[&str], short: bool) -> Option<(usize, &'a str)> {
    words.iter().enumerate().find_map(|(i, w)| {
        let w = if short { &w[..3] } else { w };
        text.get(..w.len())
            .filter(|p| p.eq_ignore_ascii_case(w))
            .map(|_| (i, &text[w.len()..]))
    })
}

/// Parses `text` with a Go layout; a layout without a zone reads the time
/// in `default_offset`. Answers ns since the epoch and the zone offset.
pub fn parse(layout: &str, text: &str, default_offset: i32) -> Result<(i64, i32), String> {
    let fail = || format!("parsing time {text:?} as {layout:?}: cannot parse");
    let (mut year, mut month, mut day, mut yday) = (1i64, 1i64, 1i64, None);
    let (mut hour, mut minute, mut second, mut nanos) = (0i64, 0i64, 0i64, 0i64);
    let mut pm: Option<bool> = None;
    let mut offset: Option<i32> = None;
    let mut rest = text;
    for item in items(layout) {
        match item {
            Item::Lit(s) => rest = rest.strip_prefix(s.as_str()).ok_or_else(fail)?,
            Item::LongMonth | Item::Month => {
                let (m, r) = take_word(rest, &MONTHS, item == Item::Month).ok_or_else(fail)?;
                month = m as i64 + 1;
                rest = r;
            }
            Item::LongWeekday | Item::Weekday => {
                let (_, r) = take_word(rest, &DAYS, item == Item::Weekday).ok_or_else(fail)?;
                rest = r;
            }
            Item::NumMonth | Item::ZeroMonth => {
                let min = if item == Item::ZeroMonth { 2 } else { 1 };
                (month, rest) = take_digits(rest, min, 2).ok_or_else(fail)?;
            }
            Item::Day | Item::ZeroDay | Item::UnderDay => {
                let trimmed = if item == Item::UnderDay {
                    rest.strip_prefix(' ').unwrap_or(rest)
                } else {
                    rest
                };
                let min = if item == Item::ZeroDay { 2 } else { 1 };
                (day, rest) = take_digits(trimmed, min, 2).ok_or_else(fail)?;
            }
            Item::YearDay => {
                let (d, r) = take_digits(rest, 3, 3).ok_or_else(fail)?;
                yday = Some(d);
                rest = r;
            }
            Item::Hour => (hour, rest) = take_digits(rest, 2, 2).ok_or_else(fail)?,
            Item::Hour12 | Item::ZeroHour12 => {
                let min = if item == Item::ZeroHour12 { 2 } else { 1 };
                (hour, rest) = take_digits(rest, min, 2).ok_or_else(fail)?;
            }
            Item::Minute | Item::ZeroMinute => {
                let min = if item == Item::ZeroMinute { 2 } else { 1 };
                (minute, rest) = take_digits(rest, min, 2).ok_or_else(fail)?;
            }
            Item::Second | Item::ZeroSecond => {
                let min = if item == Item::ZeroSecond { 2 } else { 1 };
                (second, rest) = take_digits(rest, min, 2).ok_or_else(fail)?;
                // Go accepts a fraction after seconds even when the layout has none.
                if let Some(frac) = rest.strip_prefix('.').or_else(|| rest.strip_prefix(','))
                    && frac.starts_with(|c: char| c.is_ascii_digit())
                {
                    let n = frac.chars().take_while(|c| c.is_ascii_digit()).count();
                    let digits = format!("{:0<9}", &frac[..n.min(9)]);
                    nanos = digits.parse().map_err(|_| fail())?;
                    rest = &frac[n..];
                }
            }
            Item::Fraction { .. } => {}
            Item::LongYear => (year, rest) = take_digits(rest, 4, 4).ok_or_else(fail)?,
            Item::Year => {
                let (y, r) = take_digits(rest, 2, 2).ok_or_else(fail)?;
                year = if y >= 69 { 1900 + y } else { 2000 + y };
                rest = r;
            }
            Item::PM(_) => {
                let word = rest.get(..2).ok_or_else(fail)?;
                pm = Some(word.eq_ignore_ascii_case("pm"));
                if !word.eq_ignore_ascii_case("pm") && !word.eq_ignore_ascii_case("am") {
                    return Err(fail());
                }
                rest = &rest[2..];
            }
            Item::ZoneName => {
                let n = rest.chars().take_while(|c| c.is_ascii_uppercase()).count();
                if n < 3 {
                    return Err(fail());
                }
                if &rest[..n] == "UTC" || &rest[..n] == "GMT" {
                    offset = Some(0);
                }
                rest = &rest[n..];
            }
            Item::Offset {
                z,
                colon,
                seconds,
                hours_only,
            } => {
                if z && let Some(r) = rest.strip_prefix('Z') {
                    offset = Some(0);
                    rest = r;
                    continue;
                }
                let sign = match rest.chars().next() {
                    Some('+') => 1,
                    Some('-') => -1,
                    _ => return Err(fail()),
                };
                rest = &rest[1..];
                let (h, r) = take_digits(rest, 2, 2).ok_or_else(fail)?;
                rest = r;
                let mut total = h * 3600;
                let field = |rest: &mut &str| -> Result<i64, String> {
                    if colon {
                        *rest = rest.strip_prefix(':').ok_or_else(fail)?;
                    }
                    let (v, r) = take_digits(rest, 2, 2).ok_or_else(fail)?;
                    *rest = r;
                    Ok(v)
                };
                if !hours_only {
                    total += field(&mut rest)? * 60;
                }
                if seconds {
                    total += field(&mut rest)?;
                }
                offset = Some(sign * total as i32);
            }
        }
    }
    if !rest.is_empty() {
        return Err(format!("parsing time {text:?}: extra text {rest:?}"));
    }
    match pm {
        Some(true) if hour < 12 => hour += 12,
        Some(false) if hour == 12 => hour = 0,
        _ => {}
    }
    let date = match yday {
        Some(d) => NaiveDate::from_yo_opt(year as i32, d as u32),
        None => NaiveDate::from_ymd_opt(year as i32, month as u32, day as u32),
    }
    .ok_or_else(|| format!("parsing time {text:?}: day out of range"))?;
    let time = date
        .and_hms_nano_opt(hour as u32, minute as u32, second as u32, nanos as u32)
        .ok_or_else(|| format!("parsing time {text:?}: time out of range"))?;
    let offset = offset.unwrap_or(default_offset);
    let utc: NaiveDateTime = time - chrono::Duration::seconds(i64::from(offset));
    let ns = utc
        .and_utc()
        .timestamp_nanos_opt()
        .ok_or_else(|| format!("parsing time {text:?}: out of range"))?;
    Ok((ns, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_136_214_245_123_456_789; // 2006-01-02T15:04:05.123456789Z

    #[test]
    fn formats_like_go() {
        assert_eq!(format(T, 0, "2006-01-02"), "2006-01-02");
        assert_eq!(
            format(T, 0, "2006-01-02T15:04:05Z07:00"),
            "2006-01-02T15:04:05Z"
        );
        assert_eq!(
            format(T, 3600, "2006-01-02T15:04:05-07:00"),
            "2006-01-02T16:04:05+01:00"
        );
        assert_eq!(format(T, 0, "Mon Jan _2 3:04PM"), "Mon Jan  2 3:04PM");
        assert_eq!(format(T, 0, "15:04:05.000"), "15:04:05.123");
        assert_eq!(
            format(T, 0, "2006-01-02T15:04:05.00Z-07:00"),
            "2006-01-02T15:04:05.12Z+00:00"
        );
        assert_eq!(go_string(T, 0), "2006-01-02 15:04:05.123456789 +0000 UTC");
        assert_eq!(
            go_string(1_700_000_000_000_000_000, 0),
            "2023-11-14 22:13:20 +0000 UTC"
        );
    }

    #[test]
    fn parses_like_go() {
        assert_eq!(
            parse("2006-01-02", "2021-11-02", 0).unwrap().0,
            1_635_811_200_000_000_000
        );
        let (ns, off) = parse("2006-01-02T15:04:05Z07:00", "2006-01-02T16:04:05+01:00", 0).unwrap();
        assert_eq!((ns, off), (1_136_214_245_000_000_000, 3600));
        let (ns, _) = parse(
            "2006-01-02T15:04:05.999999999Z",
            "2006-01-02T15:04:05.123456789Z",
            0,
        )
        .unwrap();
        assert_eq!(ns, T);
        assert!(parse("2006-01-02", "02/11/2021", 0).is_err());
        assert!(parse("2006-01-02", "2021-02-30", 0).is_err());
    }
}
