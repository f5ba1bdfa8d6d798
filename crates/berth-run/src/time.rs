//! Times as nanoseconds since the epoch; shown as RFC 3339 (Docker's
//! RFC3339Nano) and as Docker's "3 seconds ago".

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// RFC 3339 with nanoseconds; Docker's zero time for 0.
pub fn rfc3339(ns: u64) -> String {
    if ns == 0 {
        return "0001-01-01T00:00:00Z".into();
    }
    berth_build::time::rfc3339((ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as u32)
}

/// Docker's `units.HumanDuration`: "Less than a second", "3 seconds",
/// "About a minute", "5 minutes", "About an hour", "2 hours", "3 days"...
pub fn human(since_ns: u64) -> String {
    let secs = now_ns().saturating_sub(since_ns) / 1_000_000_000;
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        s if s < 120 => "About a minute".into(),
        s if s < 3600 => format!("{} minutes", s / 60),
        s if s < 7200 => "About an hour".into(),
        s if s < 48 * 3600 => format!("{} hours", s / 3600),
        s if s < 14 * 86400 => format!("{} days", s / 86400),
        s if s < 60 * 86400 => format!("{} weeks", s / (7 * 86400)),
        s if s < 365 * 86400 => format!("{} months", s / (30 * 86400)),
        s => format!("{} years", s / (365 * 86400)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(rfc3339(0), "0001-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_500_000_000), "2023-11-14T22:13:20.5Z");
        assert_eq!(human(now_ns() + 10), "Less than a second");
        assert_eq!(human(now_ns() - 5_000_000_000), "5 seconds");
    }
}
