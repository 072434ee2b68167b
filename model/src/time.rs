//! Durations as the CRDs write them.

/// A `ttl` such as `72h`, `1h30m` or `90s` (the CRD's pattern), as a duration.
pub fn parse_ttl(ttl: &str) -> Option<std::time::Duration> {
    let mut seconds = 0u64;
    let mut number = String::new();
    for c in ttl.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        seconds += number.parse::<u64>().ok()? * unit;
        number.clear();
    }
    (number.is_empty() && !ttl.is_empty()).then(|| std::time::Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_as_durations() {
        use std::time::Duration;
        assert_eq!(parse_ttl("72h"), Some(Duration::from_secs(72 * 3600)));
        assert_eq!(parse_ttl("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_ttl("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_ttl("2m5s"), Some(Duration::from_secs(125)));
        assert_eq!(parse_ttl(""), None);
        assert_eq!(parse_ttl("10"), None);
        assert_eq!(parse_ttl("3d"), None);
    }
}
