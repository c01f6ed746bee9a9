//! Durations as manifests write them: `90d`, `12h`, `10m`, `1h30m`, `1y`.

use jiff::SignedDuration;

/// The pattern the CRD schema enforces for duration fields.
pub const DURATION_PATTERN: &str = r"^([0-9]+(s|m|h|d|w|y))+$";

/// Parses `<n><unit>...` with units s, m, h, d, w, y (365 days).
pub fn parse(s: &str) -> Result<SignedDuration, String> {
    let bad =
        || format!("'{s}' is not a duration like 90d, 12h, 10m or 1h30m (units s, m, h, d, w, y)");
    if s.is_empty() {
        return Err(bad());
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
        let part = n
            .checked_mul(secs)
            .filter(|v| *v < 100 * 365 * 86_400)
            .ok_or_else(bad)?;
        total += SignedDuration::from_secs(part);
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
}
