//! Reading and writing the times found on the wire: RFC 3339 `expirationDateTime`
//! and the HTTP dates of `Retry-After`.
//!
//! The core never reads a clock: every function here converts a time it is given.

use std::time::{Duration, SystemTime};

use jiff::Timestamp;

/// Writes `time` as Graph does: RFC 3339 in UTC with seven fractional digits and `Z`,
/// e.g. `2026-11-25T06:15:07.1234567Z`. Times before 1970 are written as the epoch.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use upsession_core::time::format_graph_time;
///
/// let t = UNIX_EPOCH + Duration::new(1_795_000_000, 123_456_789);
/// assert_eq!(format_graph_time(t), "2026-11-18T11:06:40.1234567Z");
/// ```
pub fn format_graph_time(time: SystemTime) -> String {
    let ts = Timestamp::try_from(time).unwrap_or(Timestamp::UNIX_EPOCH);
    // Truncate, never round: a rounded-up expiry would promise more than we keep.
    let ts = Timestamp::new(ts.as_second(), ts.subsec_nanosecond() / 100 * 100)
        .unwrap_or(Timestamp::UNIX_EPOCH);
    ts.strftime("%Y-%m-%dT%H:%M:%S%.7fZ").to_string()
}

/// Reads an RFC 3339 time as peers write it: with `Z` or a numeric offset, with any
/// number of fractional digits, and (as some Outlook answers do) with no offset at
/// all, which is taken as UTC.
///
/// ```
/// use upsession_core::time::{format_graph_time, parse_graph_time};
///
/// let t = parse_graph_time("2026-11-25T06:15:07.1234567Z").unwrap();
/// assert_eq!(parse_graph_time("2026-11-25T07:15:07.1234567+01:00"), Some(t));
/// assert_eq!(parse_graph_time("2026-11-25T06:15:07.1234567"), Some(t));
/// assert_eq!(format_graph_time(t), "2026-11-25T06:15:07.1234567Z");
/// ```
pub fn parse_graph_time(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let ts = text.parse::<Timestamp>().ok().or_else(|| {
        let civil: jiff::civil::DateTime = text.parse().ok()?;
        jiff::tz::Offset::UTC.to_timestamp(civil).ok()
    })?;
    SystemTime::try_from(ts).ok()
}

/// Reads a `Retry-After` value (RFC 9110 §10.2.3): delay-seconds or an HTTP date.
/// Returns how long to wait counted from `now`; a date in the past means no wait.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use upsession_core::time::parse_retry_after;
///
/// let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
/// assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
/// assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now), Some(Duration::from_secs(60)));
/// assert_eq!(parse_retry_after("soon", now), None);
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly long numbers saturate rather than fail: the deadline will refuse them.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let ts = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    let at = SystemTime::try_from(ts).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Writes an HTTP date (IMF-fixdate), as `Retry-After` and `Date` carry it.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use upsession_core::time::format_http_date;
///
/// let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
/// assert_eq!(format_http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
/// ```
pub fn format_http_date(time: SystemTime) -> String {
    let ts = Timestamp::try_from(time).unwrap_or(Timestamp::UNIX_EPOCH);
    ts.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

#[cfg(test)]
#[allow(clippy::pedantic)] // test code favours brevity over pedantry
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn graph_time_keeps_seven_digits_and_truncates() {
        let t = UNIX_EPOCH + Duration::new(0, 999_999_999);
        assert_eq!(format_graph_time(t), "1970-01-01T00:00:00.9999999Z");
        assert_eq!(
            format_graph_time(UNIX_EPOCH),
            "1970-01-01T00:00:00.0000000Z"
        );
    }

    #[test]
    fn retry_after_accepts_huge_numbers_and_past_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    proptest! {
        #[test]
        fn graph_time_round_trips_at_100ns(secs in 0u64..4_000_000_000, ticks in 0u32..10_000_000) {
            let t = UNIX_EPOCH + Duration::new(secs, ticks * 100);
            prop_assert_eq!(parse_graph_time(&format_graph_time(t)), Some(t));
        }

        #[test]
        fn http_date_round_trips_at_seconds(secs in 0u64..4_000_000_000) {
            let now = UNIX_EPOCH;
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            prop_assert_eq!(parse_retry_after(&format_http_date(t), now), Some(Duration::from_secs(secs)));
        }
    }
}
