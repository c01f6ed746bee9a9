//! Times as keyward writes them: RFC 3339 in UTC with a `+00:00` offset and the fraction of a
//! second in 0, 3, 6 or 9 digits (what earlier versions wrote, so Secrets templated with
//! `{{ expiresAt }}` and stored records read the same).

use jiff::{SignedDuration, Timestamp};

/// `n` days of 24 hours.
pub const fn days(n: i64) -> SignedDuration {
    SignedDuration::from_hours(24 * n)
}

/// `t + d`, or `None` past the last instant a timestamp can hold. Lifetimes come from manifests
/// and expiries from CMS answers, both hostile: a sum that overflows is an error, never a panic.
pub fn later(t: Timestamp, d: SignedDuration) -> Option<Timestamp> {
    t.checked_add(d).ok()
}

/// `t - d`, or `None` before the first instant a timestamp can hold.
pub fn earlier(t: Timestamp, d: SignedDuration) -> Option<Timestamp> {
    t.checked_sub(d).ok()
}

/// `2026-12-01T16:41:40.123+00:00`.
pub fn rfc3339(t: Timestamp) -> String {
    let base = t.strftime("%Y-%m-%dT%H:%M:%S");
    let nanos = t.subsec_nanosecond();
    let fraction = if nanos == 0 {
        String::new()
    } else if nanos % 1_000_000 == 0 {
        format!(".{:03}", nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        format!(".{:06}", nanos / 1_000)
    } else {
        format!(".{nanos:09}")
    };
    format!("{base}{fraction}+00:00")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_past_the_range_are_none_not_a_panic() {
        let huge = SignedDuration::from_secs(i64::MAX);
        assert_eq!(later(Timestamp::MAX, SignedDuration::from_secs(1)), None);
        assert_eq!(later(Timestamp::now(), huge), None);
        assert_eq!(earlier(Timestamp::MIN, SignedDuration::from_secs(1)), None);
        assert_eq!(earlier(Timestamp::now(), huge), None);
        let t: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(
            later(t, days(1)),
            Some("2030-01-02T00:00:00Z".parse().unwrap())
        );
        assert_eq!(
            earlier(t, days(1)),
            Some("2029-12-31T00:00:00Z".parse().unwrap())
        );
    }

    #[test]
    fn fractions_in_groups_of_three_and_a_utc_offset() {
        for (given, written) in [
            ("2030-01-31T00:00:00Z", "2030-01-31T00:00:00+00:00"),
            ("2030-01-31T00:00:00.12Z", "2030-01-31T00:00:00.120+00:00"),
            (
                "2030-01-31T00:00:00.1234Z",
                "2030-01-31T00:00:00.123400+00:00",
            ),
            (
                "2030-01-31T00:00:00.123456789Z",
                "2030-01-31T00:00:00.123456789+00:00",
            ),
            ("2030-01-31T02:00:00+02:00", "2030-01-31T00:00:00+00:00"),
        ] {
            assert_eq!(rfc3339(given.parse().unwrap()), written, "{given}");
        }
    }
}
