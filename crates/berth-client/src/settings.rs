//! Limits every berth download shares: the HTTP timeouts (registries,
//! `ADD <url>`, `berth import <url>`) and the parsing of the environment
//! variables that set them, plus size values (`64GiB`) for the byte limits
//! other crates read.
//!
//! | variable | default | what |
//! |---|---|---|
//! | `BERTH_CONNECT_TIMEOUT` | 30s | setting up a connection (TCP + TLS) |
//! | `BERTH_IDLE_TIMEOUT` | 60s | longest wait for the next byte of a response, or for a request body to be taken |
//! | `BERTH_REQUEST_TIMEOUT` | 5m | a whole request with a small body (manifests, tokens, tags, HEAD); never a blob body |
//!
//! Values are seconds (`90`), or a number with `ms`, `s`, `m` or `h`
//! (`1.5m`); `0` or `off` turns a timeout off. A value that cannot be
//! parsed is reported once and the default used.

use std::time::Duration;

pub const CONNECT_TIMEOUT_ENV: &str = "BERTH_CONNECT_TIMEOUT";
pub const IDLE_TIMEOUT_ENV: &str = "BERTH_IDLE_TIMEOUT";
pub const REQUEST_TIMEOUT_ENV: &str = "BERTH_REQUEST_TIMEOUT";

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a request may wait. `None` = no limit.
///
/// A blob body has no overall limit (a 10 GB layer takes as long as it
/// takes): only `idle` applies to it, as the stall detection that matters
/// for long transfers (what skopeo and containerd lack, and what
/// `--command-timeout` only approximates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Option<Duration>,
    pub idle: Option<Duration>,
    pub request: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Some(DEFAULT_CONNECT_TIMEOUT),
            idle: Some(DEFAULT_IDLE_TIMEOUT),
            request: Some(DEFAULT_REQUEST_TIMEOUT),
        }
    }
}

impl Timeouts {
    /// The defaults, overridden by `BERTH_CONNECT_TIMEOUT`,
    /// `BERTH_IDLE_TIMEOUT` and `BERTH_REQUEST_TIMEOUT`.
    pub fn from_env() -> Timeouts {
        let d = Timeouts::default();
        Timeouts {
            connect: env_duration(CONNECT_TIMEOUT_ENV, d.connect),
            idle: env_duration(IDLE_TIMEOUT_ENV, d.idle),
            request: env_duration(REQUEST_TIMEOUT_ENV, d.request),
        }
    }

    /// A reqwest client builder with the connect timeout and the idle
    /// timeout for response bodies (reqwest's `read_timeout` is per read of
    /// the body, and a deadline from the start of the request for the
    /// headers: right for requests without a large body).
    pub fn apply(&self, mut b: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        if let Some(c) = self.connect {
            b = b.connect_timeout(c);
        }
        if let Some(i) = self.idle {
            b = b.read_timeout(i);
        }
        b
    }

    /// Which setting a timeout that fired after `elapsed` most likely was
    /// (reqwest does not say): the connect one for a connection, the
    /// overall one if the request had it (`overall`) and ran that long,
    /// else the idle one. With the value, for messages.
    pub fn which(
        &self,
        elapsed: Duration,
        connect: bool,
        overall: bool,
    ) -> (&'static str, Option<Duration>) {
        if connect {
            return (CONNECT_TIMEOUT_ENV, self.connect);
        }
        match (self.idle, self.request) {
            (_, Some(r)) if overall && elapsed + Duration::from_millis(50) >= r => {
                (REQUEST_TIMEOUT_ENV, Some(r))
            }
            (Some(i), _) => (IDLE_TIMEOUT_ENV, Some(i)),
            (None, r) => (REQUEST_TIMEOUT_ENV, r),
        }
    }
}

/// A duration variable, `default` when unset (or unreadable, with a
/// warning).
pub fn env_duration(name: &str, default: Option<Duration>) -> Option<Duration> {
    match std::env::var(name) {
        Ok(v) => match parse_duration(&v) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(
                    "{name}={v:?}: {e}; using {}",
                    default.map_or("no limit".into(), format_duration)
                );
                default
            }
        },
        Err(_) => default,
    }
}

/// A byte-size variable, `default` when unset (or unreadable, with a
/// warning).
pub fn env_size(name: &str, default: Option<u64>) -> Option<u64> {
    match std::env::var(name) {
        Ok(v) => match parse_size(&v) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(
                    "{name}={v:?}: {e}; using {}",
                    default.map_or("no limit".into(), format_size)
                );
                default
            }
        },
        Err(_) => default,
    }
}

/// `90`, `90s`, `1.5m`, `500ms`, `2h`; `0`/`off`/`none` = no limit.
pub fn parse_duration(s: &str) -> Result<Option<Duration>, String> {
    let t = s.trim().to_ascii_lowercase();
    if matches!(t.as_str(), "0" | "off" | "none") {
        return Ok(None);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 30, 30s, 2m, 500ms; 0 = off)"))?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "{s:?} is not a duration (e.g. 30, 30s, 2m, 500ms; 0 = off)"
            ))
        }
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    if secs == 0.0 {
        return Ok(None);
    }
    Ok(Some(Duration::from_secs_f64(secs)))
}

/// `1048576`, `512K`, `100MB`, `64GiB`, `1.5T` (all binary: K = 1024);
/// `0`/`unlimited`/`none` = no limit.
pub fn parse_size(s: &str) -> Result<Option<u64>, String> {
    let t = s.trim().to_ascii_lowercase();
    if matches!(t.as_str(), "0" | "unlimited" | "none" | "off") {
        return Ok(None);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("{s:?} is not a size (e.g. 1048576, 512M, 64GiB; 0 = unlimited)");
    let n: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let v = n * mult;
    if !v.is_finite() || v < 0.0 || v >= u64::MAX as f64 {
        return Err(format!("{s:?} is out of range"));
    }
    if v < 1.0 {
        return Ok(None);
    }
    Ok(Some(v as u64))
}

/// `30s`, `1.5m`, `500ms`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms % 60_000 == 0 && ms >= 60_000 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// `159 bytes`, `4.0 MiB`, `64.0 GiB`.
pub fn format_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30").unwrap(), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_duration("30s").unwrap(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_duration("1.5m").unwrap(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_duration("500ms").unwrap(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_duration("2h").unwrap(),
            Some(Duration::from_secs(7200))
        );
        assert_eq!(parse_duration("0").unwrap(), None);
        assert_eq!(parse_duration("off").unwrap(), None);
        for bad in ["", "x", "10y", "-1", "1e400", "s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_millis(200)), "200ms");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576").unwrap(), Some(1 << 20));
        assert_eq!(parse_size("512K").unwrap(), Some(512 << 10));
        assert_eq!(parse_size("100MB").unwrap(), Some(100 << 20));
        assert_eq!(parse_size("64GiB").unwrap(), Some(64 << 30));
        assert_eq!(parse_size("1.5t").unwrap(), Some(3 << 39));
        assert_eq!(parse_size("0").unwrap(), None);
        assert_eq!(parse_size("unlimited").unwrap(), None);
        for bad in ["", "x", "10q", "-5", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(format_size(159), "159 bytes");
        assert_eq!(format_size(4 << 20), "4.0 MiB");
        assert_eq!(format_size(64 << 30), "64.0 GiB");
    }

    #[test]
    fn which_timeout() {
        let t = Timeouts::default();
        let s = |secs| Duration::from_secs(secs);
        assert_eq!(t.which(s(1), true, true).0, CONNECT_TIMEOUT_ENV);
        assert_eq!(t.which(s(60), false, true).0, IDLE_TIMEOUT_ENV);
        assert_eq!(t.which(s(300), false, true).0, REQUEST_TIMEOUT_ENV);
        // A blob body has no overall limit: a stall after an hour of
        // download is the idle timeout.
        assert_eq!(t.which(s(3600), false, false).0, IDLE_TIMEOUT_ENV);
    }
}
