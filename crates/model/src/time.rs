//! Calendar arithmetic without a date library: RFC 3339 timestamps (what Segment's `timestamp` holds) to and from
//! Unix milliseconds, `YYYY-MM-DD` dates, and quarters (`2026Q4`).

pub use crate::calendar::{DAY_MS, format_date};
use crate::calendar::{civil_from_days, days_from_civil, days_in_month};

/// Parses `2026-01-31T12:00:00Z`, `2026-01-31T12:00:00.123+02:00` (a space may replace the `T`; fractions beyond
/// milliseconds are truncated). A zone is required: a time without one means different instants on different pods.
pub fn parse_rfc3339(text: &str) -> Result<i64, String> {
    let bad = |why: &str| format!("timestamp `{text}` is not RFC 3339 ({why})");
    let bytes = text.as_bytes();
    if bytes.len() < 20 {
        return Err(bad("too short; expected e.g. 2026-01-31T12:00:00Z"));
    }
    let digits = |range: std::ops::Range<usize>| -> Result<i64, String> {
        let part = &text[range];
        if part.bytes().all(|b| b.is_ascii_digit()) {
            Ok(part.parse::<i64>().unwrap_or_default())
        } else {
            Err(bad("expected digits"))
        }
    };
    let separators_ok = bytes[4] == b'-'
        && bytes[7] == b'-'
        && matches!(bytes[10], b'T' | b't' | b' ')
        && bytes[13] == b':'
        && bytes[16] == b':';
    if !separators_ok {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SS"));
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(bad("no such date"));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err(bad("no such time of day"));
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let end = fraction
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(fraction.len());
        if end == 0 {
            return Err(bad("empty fraction of a second"));
        }
        let padded = format!("{:0<3}", &fraction[..end.min(3)]);
        millis = padded.parse::<i64>().unwrap_or_default();
        rest = &fraction[end..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        zone if zone.len() == 6 && matches!(&zone[..1], "+" | "-") && &zone[3..4] == ":" => {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let (h, m) = (&zone[1..3], &zone[4..6]);
            let parse = |p: &str| p.parse::<i64>().map_err(|_| bad("bad zone offset"));
            let (h, m) = (parse(h)?, parse(m)?);
            if h > 23 || m > 59 {
                return Err(bad("bad zone offset"));
            }
            sign * (h * 60 + m)
        }
        "" => return Err(bad("no time zone; add Z or an offset like +02:00")),
        _ => return Err(bad("bad time zone")),
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset_minutes * 60;
    Ok(seconds * 1000 + millis)
}

/// Formats Unix milliseconds as `2026-01-31T12:00:00.000Z`.
pub fn format_rfc3339(ms: i64) -> String {
    let days = ms.div_euclid(DAY_MS);
    let in_day = ms.rem_euclid(DAY_MS);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute) = (in_day / 3_600_000, in_day / 60_000 % 60);
    let (second, millis) = (in_day / 1000 % 60, in_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z")
}

/// Unix milliseconds at the start (00:00 UTC) of a `YYYY-MM-DD` date; `None` when it is not one.
pub fn date_ms(date: &str) -> Option<i64> {
    crate::calendar::date_start_ms("date", date).ok()
}

/// The quarter (`2026Q4`) of a `YYYY-MM-DD` date; `None` when it is not one.
pub fn quarter_of_date(date: &str) -> Option<String> {
    date_ms(date).map(quarter_of_ms)
}

/// The quarter (`2026Q4`) holding Unix milliseconds (UTC).
pub fn quarter_of_ms(ms: i64) -> String {
    let (year, month, _) = civil_from_days(ms.div_euclid(DAY_MS));
    format!("{year:04}Q{}", (month - 1) / 3 + 1)
}

/// The start and end (exclusive) in Unix milliseconds of a quarter like `2026Q4`; `None` when it is not one.
pub fn quarter_bounds(quarter: &str) -> Option<(i64, i64)> {
    let quarter: crate::okr::Quarter = quarter.parse().ok()?;
    Some((quarter.start_ms(), quarter.end_ms()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_quarters() {
        assert_eq!(date_ms("1970-01-02"), Some(DAY_MS));
        assert_eq!(date_ms("2026-02-30"), None);
        assert_eq!(format_date(date_ms("2024-02-29").unwrap()), "2024-02-29");
        assert_eq!(quarter_of_date("2026-11-25").as_deref(), Some("2026Q4"));
        assert_eq!(quarter_of_date("2026-01-01").as_deref(), Some("2026Q1"));
        assert_eq!(
            quarter_of_ms(date_ms("2026-06-30").unwrap() + DAY_MS - 1),
            "2026Q2"
        );
        let (start, end) = quarter_bounds("2026Q4").unwrap();
        assert_eq!(
            (format_date(start), format_date(end)),
            ("2026-10-01".into(), "2027-01-01".into())
        );
        assert_eq!(
            quarter_bounds("2026Q1")
                .map(|(s, _)| format_date(s))
                .as_deref(),
            Some("2026-01-01")
        );
        assert_eq!(quarter_bounds("2026Q5"), None);
    }

    #[test]
    fn known_instants() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_rfc3339("2026-01-31T12:00:00.5+02:00"),
            Ok(1_769_853_600_500)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29 23:59:59.999999Z"),
            Ok(1_709_251_199_999)
        );
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Ok(-1000));
    }

    #[test]
    fn round_trips() {
        for ms in [0, 1_769_853_600_500, -86_400_001, 4_102_444_800_000] {
            assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Ok(ms));
        }
    }

    #[test]
    fn rejects_what_is_not_an_instant() {
        for text in [
            "2026-01-31",
            "2026-01-31T12:00:00",
            "2026-02-30T00:00:00Z",
            "2026-01-31T25:00:00Z",
            "yesterday at noon!!",
            "2026-01-31T12:00:00+2",
        ] {
            let error = parse_rfc3339(text).expect_err(text);
            assert!(error.contains(text), "{error}");
        }
    }
}
