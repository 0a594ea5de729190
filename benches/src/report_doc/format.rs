//! Numbers, durations and text as the report's tables show them.

use std::time::Duration;

/// `n` with thousands separated by commas: 1,234,567.
pub(super) fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .map(|g| std::str::from_utf8(g).expect("ASCII digits"))
        .collect();
    groups.reverse();
    groups.join(",")
}

/// Microseconds for a table: whole numbers with separators, one decimal under 100.
pub(super) fn micros(us: f64) -> String {
    if !us.is_finite() {
        "?".to_string()
    } else if us < 100.0 {
        format!("{us:.1}")
    } else {
        grouped(us.round() as u64)
    }
}

/// Milliseconds for a table, the same way.
pub(super) fn millis(ms: f64) -> String {
    micros(ms)
}

/// A ratio: 4.24×.
pub(super) fn times(ratio: f64) -> String {
    format!("{ratio:.2}×")
}

/// `text` as inline code, safe inside a table cell.
pub(super) fn code(text: &str) -> String {
    let fence = if text.contains('`') { "``" } else { "`" };
    cell(&format!("{fence}{text}{fence}"))
}

/// `text` safe inside a table cell: no line breaks, pipes escaped.
pub(super) fn cell(text: &str) -> String {
    text.replace(['\n', '\r'], " ").replace('|', "\\|")
}

/// At most `max` characters of `text`, with an ellipsis if cut.
pub(super) fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// "4 min 12 s", or "12 s" under a minute.
pub(super) fn minutes_seconds(d: Duration) -> String {
    let secs = d.as_secs_f64().round() as u64;
    match secs / 60 {
        0 => format!("{secs} s"),
        m => format!("{m} min {} s", secs % 60),
    }
}

/// `secs` since the Unix epoch as "2026-11-28 10:12:03 UTC".
pub(super) fn utc_date_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01: counted in 400-year eras of
/// 146,097 days, each starting on 1 March so that the leap day ends its year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_numbers_and_durations_read_right() {
        assert_eq!(utc_date_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_date_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_date_time(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc_date_time(4_107_542_399), "2100-02-28 23:59:59 UTC");
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(micros(97.46), "97.5");
        assert_eq!(micros(7_470.6), "7,471");
        assert_eq!(micros(f64::NAN), "?");
        assert_eq!(minutes_seconds(Duration::from_secs(59)), "59 s");
        assert_eq!(minutes_seconds(Duration::from_secs(252)), "4 min 12 s");
        assert_eq!(code("a|b"), "`a\\|b`");
        assert_eq!(shorten("abcdef", 3), "abc…");
    }
}
