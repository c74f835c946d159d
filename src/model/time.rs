//! Times in the canonical model: whole seconds, shown in Beijing time.
//!
//! Every province's systems keep Beijing time (UTC+8, no daylight saving since 1991), so the
//! gateway needs no time-zone database: a [`Timestamp`] is a count of seconds since the Unix
//! epoch, and the native time styles of `formats.md` are fixed-offset layouts. Parsing is strict
//! (a wrong layout is an error, never a guess) and sub-second parts are truncated, as
//! `canonical.md` asks.

use std::fmt;

/// Beijing time's offset from UTC, in seconds.
pub const BEIJING_OFFSET_SECONDS: i64 = 8 * 3600;

/// The earliest and latest years a document may carry; outside them a time is a typo, and the
/// bound keeps every arithmetic step far from overflow.
const MIN_YEAR: i64 = 1900;
const MAX_YEAR: i64 = 9999;

/// A moment, to the second (seconds since 1970-01-01T00:00:00Z).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// A calendar date and wall-clock time, without a zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CivilTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// Why a text is not a time of the expected layout.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected}, got {got:?}")]
pub struct TimeError {
    /// The layout that was expected, as a person reads it (`yyyy-MM-dd HH:mm:ss`).
    pub expected: String,
    /// The text that was given.
    pub got: String,
}

impl Timestamp {
    /// The moment `seconds` after the Unix epoch.
    pub fn from_unix_seconds(seconds: i64) -> Option<Self> {
        let ts = Timestamp(seconds);
        let year = ts.beijing().year;
        (MIN_YEAR..=MAX_YEAR).contains(&year).then_some(ts)
    }

    /// The current time, to the second.
    pub fn now() -> Self {
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Timestamp(i64::try_from(seconds).unwrap_or(i64::MAX))
    }

    /// Seconds since the Unix epoch.
    pub fn unix_seconds(self) -> i64 {
        self.0
    }

    /// The moment a wall-clock time names at the given offset from UTC.
    pub fn from_civil(civil: CivilTime, offset_seconds: i64) -> Option<Self> {
        if !civil.is_valid() {
            return None;
        }
        let days = days_from_civil(civil.year, civil.month, civil.day);
        let local = days * 86_400
            + i64::from(civil.hour) * 3600
            + i64::from(civil.minute) * 60
            + i64::from(civil.second);
        Timestamp::from_unix_seconds(local - offset_seconds)
    }

    /// This moment on a Beijing wall clock.
    pub fn beijing(self) -> CivilTime {
        let local = self.0 + BEIJING_OFFSET_SECONDS;
        let days = local.div_euclid(86_400);
        let secs = local.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        CivilTime {
            year,
            month,
            day,
            hour: (secs / 3600) as u32,
            minute: (secs % 3600 / 60) as u32,
            second: (secs % 60) as u32,
        }
    }

    /// Strict RFC 3339: `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)`. With `default_beijing`, a time
    /// without an offset is read as Beijing time (ticket-json); otherwise the offset is required.
    pub fn parse_rfc3339(text: &str, default_beijing: bool) -> Result<Self, TimeError> {
        let expected = if default_beijing {
            "an RFC 3339 time (yyyy-MM-ddTHH:mm:ss with an optional offset)"
        } else {
            "an RFC 3339 time with an offset (yyyy-MM-ddTHH:mm:ss+08:00)"
        };
        let fail = || TimeError { expected: expected.to_string(), got: text.to_string() };
        let bytes = text.as_bytes();
        if bytes.len() < 19 || !matches!(bytes[10], b'T' | b't' | b' ') {
            return Err(fail());
        }
        // `get` refuses a cut inside a multi-byte character (found by fuzzing).
        let (Some(head), Some(mut rest)) = (text.get(..19), text.get(19..)) else {
            return Err(fail());
        };
        let civil = parse_layout(head, "yyyy-MM-dd HH:mm:ss", 10).ok_or_else(fail)?;
        if let Some(fraction) = rest.strip_prefix('.') {
            let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(fail());
            }
            rest = &fraction[digits..];
        }
        let offset = match rest {
            "" if default_beijing => BEIJING_OFFSET_SECONDS,
            "Z" | "z" => 0,
            _ => parse_offset(rest).ok_or_else(fail)?,
        };
        Timestamp::from_civil(civil, offset).ok_or_else(fail)
    }

    /// A Beijing wall-clock time in a fixed layout of `yyyy MM dd HH mm ss` and literal
    /// separators, such as `yyyy/MM/dd HH:mm:ss` or `yyyyMMddHHmmss`.
    pub fn parse_beijing(text: &str, layout: &str) -> Result<Self, TimeError> {
        let fail = || TimeError { expected: layout.to_string(), got: text.to_string() };
        let civil = parse_layout(text, layout, usize::MAX).ok_or_else(fail)?;
        Timestamp::from_civil(civil, BEIJING_OFFSET_SECONDS).ok_or_else(fail)
    }

    /// This moment as a Beijing wall-clock time in `layout` (see [`Timestamp::parse_beijing`]).
    pub fn format_beijing(self, layout: &str) -> String {
        let c = self.beijing();
        let mut out = String::with_capacity(layout.len());
        let mut rest = layout;
        while !rest.is_empty() {
            let (field, width, value) = match rest.as_bytes()[0] {
                b'y' if rest.starts_with("yyyy") => ("yyyy", 4, c.year),
                b'M' if rest.starts_with("MM") => ("MM", 2, i64::from(c.month)),
                b'd' if rest.starts_with("dd") => ("dd", 2, i64::from(c.day)),
                b'H' if rest.starts_with("HH") => ("HH", 2, i64::from(c.hour)),
                b'm' if rest.starts_with("mm") => ("mm", 2, i64::from(c.minute)),
                b's' if rest.starts_with("ss") => ("ss", 2, i64::from(c.second)),
                _ => {
                    let ch = rest.chars().next().unwrap_or_default();
                    out.push(ch);
                    rest = &rest[ch.len_utf8()..];
                    continue;
                }
            };
            push_digits(&mut out, value, width);
            rest = &rest[field.len()..];
        }
        out
    }

    /// RFC 3339 in Beijing time: `2023-05-08T09:41:09+08:00`.
    pub fn to_rfc3339(self) -> String {
        let mut s = self.format_beijing("yyyy-MM-ddTHH:mm:ss");
        s.push_str("+08:00");
        s
    }

    /// Milliseconds since the epoch.
    pub fn epoch_millis(self) -> i64 {
        self.0 * 1000
    }

    /// The moment `millis` milliseconds after the epoch, truncated to the second.
    pub fn from_epoch_millis(millis: i64) -> Option<Self> {
        Timestamp::from_unix_seconds(millis.div_euclid(1000))
    }

    /// This moment plus `seconds`.
    pub fn plus_seconds(self, seconds: i64) -> Self {
        Timestamp(self.0.saturating_add(seconds))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse_rfc3339(text.trim(), false).map_err(serde::de::Error::custom)
    }
}

impl CivilTime {
    fn is_valid(&self) -> bool {
        (MIN_YEAR..=MAX_YEAR).contains(&self.year)
            && (1..=12).contains(&self.month)
            && self.day >= 1
            && self.day <= days_in_month(self.year, self.month)
            && self.hour < 24
            && self.minute < 60
            && self.second < 60
    }
}

/// Writes `value` zero-padded to `width` digits (years are always four here).
fn push_digits(out: &mut String, value: i64, width: usize) {
    let mut digits = [b'0'; 4];
    let mut v = value.unsigned_abs();
    for slot in digits[..width].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    for &d in &digits[..width] {
        out.push(char::from(d));
    }
}

/// Reads `text` against `layout`; a space in the layout at byte `t_at` also accepts `T`/`t`.
fn parse_layout(text: &str, layout: &str, t_at: usize) -> Option<CivilTime> {
    let (t, l) = (text.as_bytes(), layout.as_bytes());
    if t.len() != l.len() {
        return None;
    }
    let mut civil = CivilTime { year: 0, month: 0, day: 0, hour: 0, minute: 0, second: 0 };
    let mut i = 0;
    while i < l.len() {
        let width = match l[i] {
            b'y' => 4,
            b'M' | b'd' | b'H' | b'm' | b's' => 2,
            sep => {
                let ok = t[i] == sep || (i == t_at && matches!(t[i], b'T' | b't'));
                if !ok {
                    return None;
                }
                i += 1;
                continue;
            }
        };
        let digits = t.get(i..i + width)?;
        if !digits.iter().all(u8::is_ascii_digit) || l.get(i..i + width)?.iter().any(|&c| c != l[i])
        {
            return None;
        }
        let value = digits.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'));
        match l[i] {
            b'y' => civil.year = value,
            b'M' => civil.month = value as u32,
            b'd' => civil.day = value as u32,
            b'H' => civil.hour = value as u32,
            b'm' => civil.minute = value as u32,
            _ => civil.second = value as u32,
        }
        i += width;
    }
    civil.is_valid().then_some(civil)
}

/// `+08:00`, `-05:30` (and `+0800`) to seconds east of UTC.
fn parse_offset(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let sign = match b.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: Vec<u8> = match b.len() {
        6 if b[3] == b':' => vec![b[1], b[2], b[4], b[5]],
        5 => b[1..5].to_vec(),
        _ => return None,
    };
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let hours = i64::from(digits[0] - b'0') * 10 + i64::from(digits[1] - b'0');
    let minutes = i64::from(digits[2] - b'0') * 10 + i64::from(digits[3] - b'0');
    (hours < 24 && minutes < 60).then_some(sign * (hours * 3600 + minutes * 60))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_layouts_read_as_beijing_time() {
        let t = Timestamp::parse_beijing("2023-05-08 09:41:09", "yyyy-MM-dd HH:mm:ss").unwrap();
        assert_eq!(t.to_rfc3339(), "2023-05-08T09:41:09+08:00");
        assert_eq!(t.epoch_millis(), 1_683_510_069_000);
        let t = Timestamp::parse_beijing("20231231235840", "yyyyMMddHHmmss").unwrap();
        assert_eq!(t.format_beijing("yyyy/MM/dd HH:mm:ss"), "2023/12/31 23:58:40");
    }

    #[test]
    fn wrong_layouts_are_refused_with_the_expected_form() {
        let err =
            Timestamp::parse_beijing("2023/05/08 09:41:09", "yyyy-MM-dd HH:mm:ss").unwrap_err();
        assert_eq!(err.to_string(), r#"expected yyyy-MM-dd HH:mm:ss, got "2023/05/08 09:41:09""#);
        for bad in [
            "2023-02-29 00:00:00",
            "2023-13-01 00:00:00",
            "2023-01-01 24:00:00",
            "2023-1-01 00:00:00",
        ] {
            assert!(Timestamp::parse_beijing(bad, "yyyy-MM-dd HH:mm:ss").is_err(), "{bad}");
        }
        assert!(Timestamp::parse_beijing("2024-02-29 00:00:00", "yyyy-MM-dd HH:mm:ss").is_ok());
    }

    #[test]
    fn rfc3339_converts_offsets_and_truncates_fractions() {
        let t = Timestamp::parse_rfc3339("2024-03-15T08:40:00Z", false).unwrap();
        assert_eq!(t.to_rfc3339(), "2024-03-15T16:40:00+08:00");
        let t = Timestamp::parse_rfc3339("2024-03-15T16:38:21.999+08:00", false).unwrap();
        assert_eq!(t.to_rfc3339(), "2024-03-15T16:38:21+08:00");
        assert!(Timestamp::parse_rfc3339("2024-03-15T16:38:21", false).is_err());
        let t = Timestamp::parse_rfc3339("2024-03-15T16:38:21", true).unwrap();
        assert_eq!(t.to_rfc3339(), "2024-03-15T16:38:21+08:00");
        let t = Timestamp::parse_rfc3339("2024-03-15T03:08:21-05:30", false).unwrap();
        assert_eq!(t.to_rfc3339(), "2024-03-15T16:38:21+08:00");
        // fuzzing found this: a multi-byte character across the 19th byte
        assert!(Timestamp::parse_rfc3339("2023-05-09T09:0回访市民", true).is_err());
    }

    #[test]
    fn civil_round_trip_over_centuries() {
        for days in (-25_000..3_000_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
