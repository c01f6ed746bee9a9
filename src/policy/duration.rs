//! Durations as manifests write them: `90d`, `12h`, `10m`, `1h30m`, `1y`.

use jiff::SignedDuration;

/// The pattern the CRD schema enforces for duration fields.
pub const DURATION_PATTERN: &str = r"^([0-9]+(s|m|h|d|w|y))+$";

/// The longest duration text (the CRD's `maxLength` too): `1y2w3d4h5m6s` is 12.
pub const DURATION_MAX_LENGTH: usize = 32;

/// The longest duration, each part and all parts together: nothing keyward keeps lives longer,
/// and a sum without a bound would overflow the instants it is added to.
const MAX_SECONDS: i64 = 100 * 365 * 86_400;

/// Parses `<n><unit>...` with units s, m, h, d, w, y (365 days).
pub fn parse(s: &str) -> Result<SignedDuration, String> {
    // Only a bounded part of what was written is repeated.
    let shown = || {
        let head: String = s.chars().take(DURATION_MAX_LENGTH).collect();
        let more = if head.len() < s.len() { "..." } else { "" };
        format!("'{head}{more}'")
    };
    let bad = || {
        format!(
            "{} is not a duration like 90d, 12h, 10m or 1h30m (units s, m, h, d, w, y)",
            shown()
        )
    };
    if s.is_empty() {
        return Err(bad());
    }
    if s.len() > DURATION_MAX_LENGTH {
        return Err(format!(
            "{} is longer than {DURATION_MAX_LENGTH} characters",
            shown()
        ));
    }
    let mut total = SignedDuration::ZERO;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let secs = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            'y' => 365 * 86_400,
            _ => return Err(bad()),
        };
        let too_long = || format!("{} is longer than 100 years in all", shown());
        let part = n
            .checked_mul(secs)
            .filter(|v| *v < MAX_SECONDS)
            .ok_or_else(too_long)?;
        total = total
            .checked_add(SignedDuration::from_secs(part))
            .filter(|t| t.as_secs() < MAX_SECONDS)
            .ok_or_else(too_long)?;
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse("90d").unwrap(), crate::model::days(90));
        assert_eq!(parse("1h30m").unwrap(), SignedDuration::from_mins(90));
        assert_eq!(parse("1y").unwrap(), crate::model::days(365));
        for bad in ["", "10", "d", "5x", "1.5h", "-1d", "999999999999y"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_sum_is_bounded_as_each_part_is() {
        // Each part under the cap, the sum over it: refused, never summed past the range.
        assert!(parse("99y99y")
            .unwrap_err()
            .contains("longer than 100 years"));
        assert!(parse("99y").is_ok());
        let long = "99y".repeat(100);
        let e = parse(&long).unwrap_err();
        assert!(e.contains("longer than 32 characters"), "{e}");
        assert!(e.len() < 200, "the message quotes a bounded part: {e}");
    }
}
