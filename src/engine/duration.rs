//! Durations as users write them (`30s`, `5m`, `1h30m`, `250ms`: Go's syntax, which
//! Kubernetes users know from other resources) and as Weir prints them.

use super::quote::q;
use std::time::Duration;

/// Parses `1h30m`, `45s`, `1.5h`, `250ms`. Units: `ms`, `s`, `m`, `h`. No sign, no spaces.
pub fn parse(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut total_ms: f64 = 0.0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        if start == i {
            return Err(format!(
                "{} is not a duration: expected a number at {}",
                q(text),
                q(&text[start..])
            ));
        }
        let number: f64 = text[start..i]
            .parse()
            .map_err(|_| format!("{} is not a duration: bad number {}", q(text), q(&text[start..i])))?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let factor_ms = match &text[unit_start..i] {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            "" => {
                return Err(format!(
                    "{} is not a duration: missing unit (ms, s, m or h) after {number}",
                    q(text)
                ));
            }
            other => {
                return Err(format!(
                    "{} is not a duration: unknown unit {} (use ms, s, m or h)",
                    q(text),
                    q(other)
                ));
            }
        };
        total_ms += number * factor_ms;
    }
    if !total_ms.is_finite() || total_ms > 1e15 {
        return Err(format!("{} is too long a duration", q(text)));
    }
    Ok(Duration::from_millis(total_ms.round() as u64))
}

/// Formats a duration the way `kubectl` prints ages: `850ms`, `42s`, `3m7s`, `2h5m`, `3d4h`.
pub fn format(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (days, hours, minutes, seconds) = (
        secs / 86_400,
        (secs % 86_400) / 3_600,
        (secs % 3_600) / 60,
        secs % 60,
    );
    if days > 0 {
        format!("{days}d{hours}h")
    } else if hours > 0 {
        format!("{hours}h{minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("2m3s").unwrap(), Duration::from_secs(123));
    }

    #[test]
    fn rejects_bad_durations_with_a_reason() {
        assert!(parse("").is_err());
        assert!(parse("10").unwrap_err().contains("missing unit"));
        assert!(parse("5d").unwrap_err().contains("unknown unit \"d\""));
        assert!(parse("-5s").is_err());
        assert!(parse("1.2.3s").is_err());
        assert!(parse("99999999999999h").unwrap_err().contains("too long"));
    }

    #[test]
    fn formats_like_kubectl() {
        assert_eq!(format(Duration::from_millis(850)), "850ms");
        assert_eq!(format(Duration::from_secs(42)), "42s");
        assert_eq!(format(Duration::from_secs(187)), "3m7s");
        assert_eq!(format(Duration::from_secs(7500)), "2h5m");
        assert_eq!(format(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3d4h");
    }

    #[test]
    fn parts_add_up_in_any_order() {
        assert_eq!(parse("30m1h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("1h1h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse("1m0.5s").unwrap(), Duration::from_millis(60_500));
        assert_eq!(
            parse("0.0004s").unwrap(),
            Duration::ZERO,
            "rounded to milliseconds"
        );
    }

    #[test]
    fn rejects_what_go_and_kubernetes_users_might_try() {
        for (text, reason) in [
            ("1h 30m", "expected a number at \" 30m\""),
            ("1h30", "missing unit"),
            ("1e3s", "unknown unit \"e\""),
            ("1d", "unknown unit \"d\""),
            ("10us", "unknown unit \"us\""),
            ("inf", "expected a number"),
            ("NaNs", "expected a number"),
            ("s", "expected a number"),
            ("+5s", "expected a number"),
            ("1..5s", "bad number"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn format_rounds_down_to_its_two_units() {
        assert_eq!(format(Duration::ZERO), "0ms");
        assert_eq!(format(Duration::from_millis(1999)), "1s");
        assert_eq!(format(Duration::from_secs(3600)), "1h0m");
        assert_eq!(format(Duration::from_secs(86_399)), "23h59m");
        assert_eq!(format(Duration::from_secs(86_400)), "1d0h");
    }
}
