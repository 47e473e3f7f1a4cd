//! Go-style durations as Kubernetes APIs write them: `250ms`, `1.5s`, `2m`, `1h30m`.

use std::time::Duration;

/// The pattern the CRD schema enforces.
pub const PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// The longest duration Envoy accepts in the fields Rudder emits. A protobuf Duration
/// goes to 315,576,000,000 s, but Envoy 1.40 turns route timeouts and retry intervals
/// into int64 nanoseconds and rejects anything longer than this (about 292 years;
/// measured with `envoy --mode validate`, see `testbed/tests/envoy_limits.rs`).
pub const MAX_SECONDS: u64 = 9_223_372_035;

/// Parses a duration such as `250ms`, `1.5s` or `1h30m`, at most [`MAX_SECONDS`].
pub fn parse(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{} is not a duration (like 250ms, 1.5s, 2m or 1h30m)",
            crate::text::quote(s)
        )
    };
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(end);
        let value: f64 = num.parse().map_err(|_| bad())?;
        let (unit, next) = if let Some(t) = tail.strip_prefix("ms") {
            (0.001, t)
        } else if let Some(t) = tail.strip_prefix('s') {
            (1.0, t)
        } else if let Some(t) = tail.strip_prefix('m') {
            (60.0, t)
        } else if let Some(t) = tail.strip_prefix('h') {
            (3600.0, t)
        } else {
            return Err(bad());
        };
        total += value * unit;
        rest = next;
    }
    if total > MAX_SECONDS as f64 {
        return Err(format!(
            "{} is above {MAX_SECONDS}s, the longest duration Envoy accepts",
            crate::text::quote(s)
        ));
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_durations() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        for bad in ["", "5", "s", "1d", "-1s", "1.2.3s"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
