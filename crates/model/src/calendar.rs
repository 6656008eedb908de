//! Proleptic Gregorian dates to Unix days and back, without a date library: what quarters, `--as-of` dates and
//! event timestamps (in `analysis::time`) are computed with. All in UTC.

use crate::Error;

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// Whether `year` has a 29 February.
pub fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days of `month` (1 to 12) in `year`.
pub fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date (year, month, day) of a day since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The first instant (UTC midnight, Unix ms) of a date written `YYYY-MM-DD`; `field` names the argument in errors.
pub fn date_start_ms(field: &str, text: &str) -> Result<i64, Error> {
    crate::validate_date(field, text)?;
    let number = |range: std::ops::Range<usize>| text[range].parse::<i64>().unwrap_or_default();
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    if day > days_in_month(year, month) {
        return Err(Error::invalid(
            field,
            format!("`{text}` is not a day of {year}-{month:02}"),
        ));
    }
    Ok(days_from_civil(year, month, day) * DAY_MS)
}

/// The date of an instant, `YYYY-MM-DD`.
pub fn format_date(ms: i64) -> String {
    let (year, month, day) = civil_from_days(ms.div_euclid(DAY_MS));
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(date_start_ms("--as-of", "1970-01-01"), Ok(0));
        assert_eq!(
            date_start_ms("--as-of", "2026-10-01"),
            Ok(1_790_812_800_000)
        );
        assert_eq!(format_date(1_790_812_800_000 + DAY_MS - 1), "2026-10-01");
        assert_eq!(format_date(-1), "1969-12-31");
        for text in ["2024-02-29", "2000-02-29", "2027-01-01", "1999-12-31"] {
            let ms = date_start_ms("--as-of", text).expect(text);
            assert_eq!(format_date(ms), text);
        }
    }

    #[test]
    fn impossible_days_are_refused() {
        let error = date_start_ms("--as-of", "2026-02-29").expect_err("not a leap year");
        assert_eq!(
            error.to_string(),
            "--as-of: `2026-02-29` is not a day of 2026-02"
        );
        assert!(date_start_ms("--as-of", "1900-02-29").is_err());
        assert!(date_start_ms("--as-of", "2026-11").is_err());
    }
}
