//! The limits that keep one client from taking the registry down (issue 9):
//! connection caps, header / idle / body-rate timeouts, upload session caps,
//! and the file-descriptor budget they are fitted into.
//!
//! Every number is configurable (`berth serve` flags and config file); the
//! defaults follow common servers where distribution has none: a 30 s
//! header timeout (hyper's default; nginx 60 s, Apache 20-40 s), a 75 s
//! keep-alive idle timeout (nginx's), a body that delivers less than
//! 1 KiB/s over 60 s of waiting is cut (nginx cuts a body stalled for 60 s,
//! Apache's mod_reqtimeout wants 500 B/s), 4096 connections of which 512
//! from one client address.

use std::net::IpAddr;
use std::time::Duration;

/// Connection-level limits of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// A connection must deliver a request's complete header within this
    /// time of its first byte (of connecting, for a new connection).
    pub header_read_timeout: Option<Duration>,
    /// A keep-alive connection with no request in flight is closed after
    /// this long without a new request starting.
    pub idle_timeout: Option<Duration>,
    /// Request bodies slower than this are cut.
    pub min_body_rate: Option<BodyRate>,
    /// Connections served at once; beyond it, new ones are answered 503 and
    /// closed. 0: as many as the file-descriptor limit allows.
    pub max_connections: usize,
    /// Connections from one client address (IPv4 address, IPv6 /64); 0: no
    /// per-client cap.
    pub max_connections_per_client: usize,
}

/// A minimum rate for request bodies: a body that delivers fewer than
/// `bytes_per_sec * window` bytes during `window` of the server waiting
/// for it is cut (time the server itself is busy, e.g. writing to disk,
/// does not count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyRate {
    pub bytes_per_sec: u64,
    pub window: Duration,
}

impl BodyRate {
    pub fn min_bytes(&self) -> u64 {
        (self.bytes_per_sec as u128 * self.window.as_millis() / 1000) as u64
    }
}

pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
pub const DEFAULT_MIN_BODY_RATE: u64 = 1024;
pub const DEFAULT_BODY_RATE_WINDOW: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 512;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Some(DEFAULT_HEADER_READ_TIMEOUT),
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            min_body_rate: Some(BodyRate {
                bytes_per_sec: DEFAULT_MIN_BODY_RATE,
                window: DEFAULT_BODY_RATE_WINDOW,
            }),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
        }
    }
}

/// Upload session limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadLimits {
    /// Open sessions in the root; 0: no cap.
    pub max_sessions: usize,
    /// Open sessions started by one client address; 0: no cap.
    pub max_sessions_per_client: usize,
    /// Sessions idle this long expire (removed by the server, and by
    /// `berth gc`); `None`: never.
    pub max_age: Option<Duration>,
    /// A session's file is closed after it has been idle this long (its
    /// next request reopens it, re-hashing what it holds).
    pub close_idle_after: Duration,
}

pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
pub const DEFAULT_MAX_SESSIONS_PER_CLIENT: usize = 256;
pub const DEFAULT_UPLOAD_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_CLOSE_IDLE_AFTER: Duration = Duration::from_secs(30);

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits {
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_sessions_per_client: DEFAULT_MAX_SESSIONS_PER_CLIENT,
            max_age: Some(DEFAULT_UPLOAD_MAX_AGE),
            close_idle_after: DEFAULT_CLOSE_IDLE_AFTER,
        }
    }
}

/// The key per-client caps count under: an IPv4 address as is (also
/// written as an IPv4-mapped IPv6 address), an IPv6 address by its /64,
/// which is what one host or site usually gets.
pub fn client_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{net}/64")
            }
        },
    }
}

/// Parses a duration as the config file and flags spell it: a number with
/// a unit `ms`, `s`, `m`, `h` or `d` (a bare number is seconds). `0`,
/// `off` and `none` are `None` (the limit is off).
pub fn parse_duration(text: &str) -> Result<Option<Duration>, String> {
    let t = text.trim();
    if matches!(t, "off" | "none") {
        return Ok(None);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid duration {text:?}: expected e.g. 30s, 500ms, 5m, 24h, 7d or off")
    })?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        other => {
            return Err(format!(
                "invalid duration {text:?}: unknown unit {other:?} (use ms, s, m, h or d)"
            ))
        }
    }
    .ok_or_else(|| format!("duration {text:?} is too large"))?;
    Ok((ms > 0).then(|| Duration::from_millis(ms)))
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (every connection and
/// every blob being read or written holds a descriptor; the soft limit is
/// often 1024). Returns the soft limit now in force.
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Ok(lim.rlim_cur as u64)
}

/// The soft `RLIMIT_NOFILE` in force (`u64::MAX` if unlimited).
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
pub fn nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_cur as u64
}

/// Connections of the private local endpoint at most (its peers are the
/// server's own user and root; the cap only keeps it within the budget).
pub const LOCAL_MAX_CONNECTIONS: usize = 256;

/// Descriptors kept for the process itself: database, lock, listeners,
/// epoll, standard streams, hashing and writer threads' files.
const RESERVED_FDS: u64 = 64;

/// What the file-descriptor limit leaves for each use. A connection costs
/// up to two descriptors (its socket and the blob file a request reads or
/// writes); an idle upload session with its file open one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub local_connections: usize,
    /// Upload session files kept open between requests.
    pub session_files: usize,
    /// Refused connections being answered 503 at once.
    pub refusals: usize,
}

impl Budget {
    /// Fits `limits` into `nofile` descriptors.
    pub fn fit(limits: &Limits, nofile: u64) -> Budget {
        let avail = nofile.saturating_sub(RESERVED_FDS).min(u32::MAX as u64) as usize;
        let session_files = berth_store::DEFAULT_MAX_OPEN_FILES.min(avail / 8).max(1);
        let local_connections = LOCAL_MAX_CONNECTIONS.min(avail / 16).max(2);
        let refusals = 64.min(avail / 16).max(1);
        let rest = avail.saturating_sub(session_files + 2 * local_connections + refusals);
        let fit = (rest / 2).max(4);
        let max_connections = match limits.max_connections {
            0 => fit,
            n => n.min(fit),
        };
        let max_connections_per_client = match limits.max_connections_per_client {
            0 => 0,
            n => n.min(max_connections),
        };
        Budget {
            max_connections,
            max_connections_per_client,
            local_connections,
            session_files,
            refusals,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Some(Duration::from_secs(30))));
        assert_eq!(parse_duration("30"), Ok(Some(Duration::from_secs(30))));
        assert_eq!(
            parse_duration("500ms"),
            Ok(Some(Duration::from_millis(500)))
        );
        assert_eq!(parse_duration("5m"), Ok(Some(Duration::from_secs(300))));
        assert_eq!(parse_duration("24h"), Ok(Some(Duration::from_secs(86400))));
        assert_eq!(
            parse_duration("7d"),
            Ok(Some(Duration::from_secs(7 * 86400)))
        );
        for off in ["0", "0s", "off", "none"] {
            assert_eq!(parse_duration(off), Ok(None), "{off}");
        }
        for bad in ["", "s", "1.5s", "-1s", "10 years", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn client_keys() {
        assert_eq!(client_key("192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(client_key("::ffff:192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(
            client_key("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            client_key("2001:db8:1:2:ffff::1".parse().unwrap()),
            client_key("2001:db8:1:2::9".parse().unwrap())
        );
    }

    #[test]
    fn the_budget_fits_the_descriptor_limit() {
        let limits = Limits::default();
        let roomy = Budget::fit(&limits, 1 << 20);
        assert_eq!(roomy.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(
            roomy.max_connections_per_client,
            DEFAULT_MAX_CONNECTIONS_PER_CLIENT
        );
        for nofile in [64, 256, 1024, 4096] {
            let b = Budget::fit(&limits, nofile);
            let used =
                64 + 2 * (b.max_connections + b.local_connections) + b.session_files + b.refusals;
            assert!(used as u64 <= nofile.max(128), "{nofile}: {b:?}");
            assert!(b.max_connections_per_client <= b.max_connections);
        }
    }
}
