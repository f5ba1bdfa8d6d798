//! What the transfer commands (copy, pull, push, save, load, artifact
//! push/pull) tell the user while blobs move, on stderr:
//!
//! - stderr is a terminal: a bar per moving blob (bytes, rate, percent)
//!   and an overall line, redrawn in place (indicatif); finished blobs
//!   scroll above them as lines.
//! - otherwise (a pipe, a log file, CI): one line per finished blob and
//!   manifest, then a summary line; nothing is redrawn.
//! - `--quiet` or `--format json`: nothing (errors still go to stderr).
//!
//! Results (a digest, the JSON report) go to stdout, so
//! `d=$(berth push -q ...)` and `berth copy --format json ... | jq` work.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_copy::Event;
use berth_oci::Digest;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// `--format`: what goes to stdout at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// The digest (progress and a summary on stderr)
    #[default]
    Text,
    /// One JSON object (or `{"error": ...}`); no progress on stderr
    Json,
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bars,
    Lines,
    Silent,
}

impl Mode {
    /// Bars only on a terminal; scripts and logs get lines; `--quiet` and
    /// `--format json` get nothing.
    pub fn pick(quiet: bool, format: Format) -> Mode {
        if quiet || format == Format::Json {
            Mode::Silent
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        }
    }
}

/// Blob counts of a transfer (`blobs` in the JSON report).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub copied: u64,
    pub skipped: u64,
    pub mounted: u64,
    /// Bytes of the copied blobs (skipped and mounted ones move none).
    pub bytes: u64,
}

/// A manifest written to the destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestRecord {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// The `--format json` result of a transfer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub source: String,
    pub destination: String,
    pub digest: Digest,
    pub media_type: String,
    pub blobs: Totals,
    /// In the order written: children before the index naming them.
    pub manifests: Vec<ManifestRecord>,
    pub duration_ms: u64,
}

struct Active {
    bar: Option<ProgressBar>,
    done: u64,
    started: Instant,
}

#[derive(Default)]
struct State {
    active: HashMap<Digest, Active>,
    totals: Totals,
    manifests: Vec<ManifestRecord>,
    /// Bytes the overall bar counts: finished blobs plus moving ones' `done`.
    overall_pos: u64,
    overall_len: u64,
}

/// Receives berth-copy's events, shows them per [`Mode`] and keeps the
/// counts for the summary and the JSON report.
pub struct Reporter {
    mode: Mode,
    multi: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    state: Mutex<State>,
    started: Instant,
}

fn blob_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix} [{bar:25}] {binary_bytes:>10} / {binary_total_bytes:<10} {binary_bytes_per_sec:>12} {percent:>3}%",
    )
    .expect("valid template")
    .progress_chars("=> ")
}

fn overall_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner} {binary_bytes} / {binary_total_bytes} ({binary_bytes_per_sec}, {elapsed}) {msg}",
    )
    .expect("valid template")
}

impl Reporter {
    pub fn new(mode: Mode) -> Reporter {
        let (multi, overall) = if mode == Mode::Bars {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let overall = multi.add(ProgressBar::new(0).with_style(overall_style()));
            overall.enable_steady_tick(Duration::from_millis(200));
            (Some(multi), Some(overall))
        } else {
            (None, None)
        };
        Reporter {
            mode,
            multi,
            overall,
            state: Mutex::new(State::default()),
            started: Instant::now(),
        }
    }

    /// Takes one event (the callback given to berth-copy).
    pub fn event(&self, e: Event) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match &e {
            Event::Started { digest, size } => {
                let bar = self.multi.as_ref().map(|m| {
                    let bar = ProgressBar::new(*size)
                        .with_style(blob_style())
                        .with_prefix(short(digest));
                    // Above the overall line, which stays last.
                    match &self.overall {
                        Some(o) => m.insert_before(o, bar),
                        None => m.add(bar),
                    }
                });
                // A retried blob starts again: forget what it had counted.
                let previous = st.active.insert(
                    digest.clone(),
                    Active {
                        bar,
                        done: 0,
                        started: Instant::now(),
                    },
                );
                match previous {
                    Some(old) => {
                        st.overall_pos -= old.done;
                        if let Some(b) = old.bar {
                            b.finish_and_clear();
                            if let Some(m) = &self.multi {
                                m.remove(&b);
                            }
                        }
                    }
                    None => st.overall_len += size,
                }
            }
            Event::Progress { digest, done, .. } => {
                if let Some(a) = st.active.get_mut(digest) {
                    let delta = done.saturating_sub(a.done);
                    a.done = *done;
                    if let Some(b) = &a.bar {
                        b.set_position(*done);
                    }
                    st.overall_pos += delta;
                }
            }
            Event::Copied { digest, size } => {
                st.totals.copied += 1;
                st.totals.bytes += size;
                let elapsed = match st.active.remove(digest) {
                    Some(a) => {
                        st.overall_pos += size.saturating_sub(a.done);
                        if let (Some(b), Some(m)) = (&a.bar, &self.multi) {
                            b.finish_and_clear();
                            m.remove(b);
                        }
                        Some(a.started.elapsed())
                    }
                    None => {
                        // Copied without Started (a caller reporting by
                        // itself): count it whole.
                        st.overall_len += size;
                        st.overall_pos += size;
                        None
                    }
                };
                self.line(&copied_line(digest, *size, elapsed));
            }
            Event::Skipped { digest, size } => {
                st.totals.skipped += 1;
                self.line(&format!(
                    "Skipped {} {} (already exists)",
                    short(digest),
                    human_bytes(*size)
                ));
            }
            Event::Mounted { digest, size, from } => {
                st.totals.mounted += 1;
                self.line(&format!(
                    "Mounted {} {} from {from}",
                    short(digest),
                    human_bytes(*size)
                ));
            }
            Event::Manifest {
                digest,
                media_type,
                size,
            } => {
                st.manifests.push(ManifestRecord {
                    digest: digest.clone(),
                    media_type: media_type.clone(),
                    size: *size,
                });
                self.line(&format!("Copied manifest {digest} ({media_type})"));
            }
        }
        if let Some(o) = &self.overall {
            o.set_length(st.overall_len);
            o.set_position(st.overall_pos);
            let t = &st.totals;
            o.set_message(format!(
                "{} copied, {} skipped, {} mounted",
                t.copied, t.skipped, t.mounted
            ));
        }
    }

    /// A finished item: above the bars on a terminal, a line otherwise.
    fn line(&self, s: &str) {
        match (self.mode, &self.multi) {
            (Mode::Bars, Some(m)) => {
                let _ = m.println(s);
            }
            (Mode::Lines, _) => {
                let _ = writeln!(std::io::stderr().lock(), "{s}");
            }
            _ => {}
        }
    }

    /// Runs `f` (which prints to stdout) with the bars hidden, so the
    /// output does not interleave with a redraw on a shared terminal.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.multi {
            Some(m) => m.suspend(f),
            None => f(),
        }
    }

    pub fn totals(&self) -> Totals {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .totals
            .clone()
    }

    pub fn manifests(&self) -> Vec<ManifestRecord> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .manifests
            .clone()
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Removes the bars; prints the summary line if the transfer
    /// succeeded (on failure the error says enough).
    pub fn finish(&self, ok: bool) {
        if let Some(m) = &self.multi {
            if let Some(o) = &self.overall {
                o.finish_and_clear();
            }
            let _ = m.clear();
        }
        if ok && self.mode != Mode::Silent {
            let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let line = summary_line(&st.totals, st.manifests.len(), self.elapsed());
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
    }
}

/// Runs `transfer` (which adds the bytes it moves to `done`) and reports
/// [`Event::Progress`] for `digest` every [`berth_copy::copy::PROGRESS_INTERVAL`]
/// until it finishes: for transfers berth-copy does not run (artifacts).
pub async fn track<F: std::future::Future>(
    reporter: &Reporter,
    digest: &Digest,
    total: u64,
    done: &std::sync::atomic::AtomicU64,
    transfer: F,
) -> F::Output {
    let every = berth_copy::copy::PROGRESS_INTERVAL;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut transfer = std::pin::pin!(transfer);
    loop {
        tokio::select! {
            biased;
            out = &mut transfer => return out,
            _ = tick.tick() => reporter.event(Event::Progress {
                digest: digest.clone(),
                done: done.load(std::sync::atomic::Ordering::Relaxed),
                total,
            }),
        }
    }
}

/// `sha256:` and the first 12 hex digits, like docker's short IDs.
pub fn short(d: &Digest) -> String {
    let s = d.to_string();
    let end = (d.algorithm().as_str().len() + 1 + 12).min(s.len());
    format!("{}…", &s[..end])
}

/// `512 B`, `1.5 KiB`, `32.0 MiB`: binary units, one decimal.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

fn rate(bytes: u64, elapsed: Duration) -> Option<String> {
    let secs = elapsed.as_secs_f64();
    (secs >= 0.001).then(|| format!("{}/s", human_bytes((bytes as f64 / secs) as u64)))
}

fn copied_line(digest: &Digest, size: u64, elapsed: Option<Duration>) -> String {
    let mut s = format!("Copied {} {}", short(digest), human_bytes(size));
    // A rate over a few milliseconds (a config blob) says nothing.
    if let Some(e) = elapsed.filter(|e| *e >= Duration::from_millis(50)) {
        s.push_str(&format!(" in {:.1}s", e.as_secs_f64()));
        if let Some(r) = rate(size, e) {
            s.push_str(&format!(" ({r})"));
        }
    }
    s
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn summary_line(t: &Totals, manifests: usize, elapsed: Duration) -> String {
    let mut s = format!(
        "Done in {:.1}s: {} copied ({}",
        elapsed.as_secs_f64(),
        plural(t.copied as usize, "blob", "blobs"),
        human_bytes(t.bytes)
    );
    if let Some(r) = rate(t.bytes, elapsed).filter(|_| t.bytes > 0) {
        s.push_str(&format!(", {r}"));
    }
    s.push_str(&format!(
        "), {} skipped, {} mounted, {}",
        t.skipped,
        t.mounted,
        plural(manifests, "manifest", "manifests")
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &[u8]) -> Digest {
        Digest::sha256_of(s)
    }

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(32 << 20), "32.0 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn lines_name_the_blob_and_its_size() {
        let digest = d(b"x");
        let hex = digest.to_string()[7..19].to_string();
        assert_eq!(short(&digest), format!("sha256:{hex}…"));
        assert_eq!(
            copied_line(&digest, 32 << 20, Some(Duration::from_millis(500))),
            format!("Copied sha256:{hex}… 32.0 MiB in 0.5s (64.0 MiB/s)")
        );
        assert_eq!(
            copied_line(&digest, 10, None),
            format!("Copied sha256:{hex}… 10 B")
        );
        assert_eq!(
            copied_line(&digest, 10, Some(Duration::from_millis(2))),
            format!("Copied sha256:{hex}… 10 B")
        );
        let t = Totals {
            copied: 1,
            skipped: 2,
            mounted: 0,
            bytes: 2 << 20,
        };
        assert_eq!(
            summary_line(&t, 1, Duration::from_secs(2)),
            "Done in 2.0s: 1 blob copied (2.0 MiB, 1.0 MiB/s), 2 skipped, 0 mounted, 1 manifest"
        );
    }

    #[test]
    fn counts_follow_the_events() {
        let r = Reporter::new(Mode::Silent);
        let (a, b, c) = (d(b"a"), d(b"b"), d(b"c"));
        r.event(Event::Started {
            digest: a.clone(),
            size: 100,
        });
        r.event(Event::Progress {
            digest: a.clone(),
            done: 60,
            total: 100,
        });
        // A retry restarts the blob; it is counted once.
        r.event(Event::Started {
            digest: a.clone(),
            size: 100,
        });
        r.event(Event::Copied {
            digest: a.clone(),
            size: 100,
        });
        r.event(Event::Skipped { digest: b, size: 5 });
        r.event(Event::Mounted {
            digest: c,
            size: 7,
            from: "src/app".into(),
        });
        r.event(Event::Manifest {
            digest: a.clone(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 300,
        });
        assert_eq!(
            r.totals(),
            Totals {
                copied: 1,
                skipped: 1,
                mounted: 1,
                bytes: 100
            }
        );
        let st = r.state.lock().unwrap();
        assert_eq!((st.overall_pos, st.overall_len), (100, 100));
        assert!(st.active.is_empty());
        drop(st);
        let m = r.manifests();
        assert_eq!(m.len(), 1);
        let json = serde_json::to_value(&m[0]).unwrap();
        assert_eq!(
            json["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(json["digest"], a.to_string());
    }
}
