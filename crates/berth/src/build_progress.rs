//! How `berth build` shows progress: BuildKit's `--progress=plain` lines,
//! or (`tty`, and `auto` on a terminal) its live display: a header with
//! the elapsed time and finished/total steps, one line per step with its
//! time, and the last lines of output under each running step, redrawn in
//! place ten times a second.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use berth_build::{Event, LintWarning, Progress};

/// Output lines kept (and shown) per running step, as BuildKit's tty mode.
const LOG_LINES: usize = 6;

/// The chosen renderer; [`Display::finish`] draws the final state.
pub struct Display {
    pub progress: Progress,
    tty: Option<Tty>,
    /// Build check findings, for the summary at the end (none with quiet).
    lints: Arc<Mutex<Vec<LintWarning>>>,
}

impl Display {
    pub fn quiet() -> Display {
        Display {
            progress: Progress::silent(),
            tty: None,
            lints: Arc::default(),
        }
    }

    pub fn plain() -> Display {
        let lints: Arc<Mutex<Vec<LintWarning>>> = Arc::default();
        Display {
            progress: plain(Arc::clone(&lints)),
            tty: None,
            lints,
        }
    }

    pub fn tty() -> Display {
        let state = Arc::new(Shared {
            state: Mutex::new(State {
                started: Some(Instant::now()),
                ..State::default()
            }),
            wake: Condvar::new(),
        });
        let sink = Arc::clone(&state);
        let lints: Arc<Mutex<Vec<LintWarning>>> = Arc::default();
        let lints2 = Arc::clone(&lints);
        let progress = Progress::new(move |e| {
            if let Event::Lint { warning, .. } = &e {
                lints2.lock().unwrap().push(warning.clone());
            }
            sink.state.lock().unwrap().apply(e);
        });
        let painter = Arc::clone(&state);
        let thread = std::thread::spawn(move || paint_loop(&painter));
        Display {
            progress,
            tty: Some(Tty {
                shared: state,
                thread: Some(thread),
            }),
            lints,
        }
    }

    /// Stops redrawing and leaves the final state on the screen. The build
    /// checks' summary (buildx's `printWarnings`) is printed when the
    /// returned guard is dropped: after the outputs, before an error.
    pub fn finish(mut self) -> Summary {
        if let Some(tty) = self.tty.as_mut() {
            tty.stop();
        }
        Summary {
            lints: std::mem::take(&mut *self.lints.lock().unwrap()),
        }
    }
}

/// Prints the build checks' summary when dropped.
pub struct Summary {
    lints: Vec<LintWarning>,
}

impl Drop for Summary {
    fn drop(&mut self) {
        if !self.lints.is_empty() {
            let text = summary(&self.lints, tracing::enabled!(tracing::Level::DEBUG));
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        }
    }
}

/// buildx's summary of the build checks' warnings: a count and one line
/// each; expanded (description, link) with `--debug`. Names keys only,
/// never values (the warnings hold no value).
fn summary(lints: &[LintWarning], expand: bool) -> String {
    let mut out = String::from("\n ");
    if lints.len() == 1 {
        out.push_str("1 warning found");
    } else {
        out.push_str(&format!("{} warnings found", lints.len()));
    }
    if !expand {
        out.push_str(" (use --debug to expand)");
    }
    out.push_str(":\n");
    for w in lints {
        out.push_str(&format!(" - {}\n", w.short()));
        if expand {
            out.push_str(&format!("{}\nMore info: {}\n\n", w.description, w.url));
        }
    }
    out
}

impl Drop for Display {
    fn drop(&mut self) {
        if let Some(tty) = self.tty.as_mut() {
            tty.stop();
        }
    }
}

struct Tty {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Tty {
    fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.shared.state.lock().unwrap().finished = true;
            self.shared.wake.notify_all();
            let _ = t.join();
        }
    }
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    started: Option<Instant>,
    vertices: BTreeMap<usize, Vertex>,
    warnings: Vec<String>,
    finished: bool,
    /// Lines drawn last time (to move the cursor back over them).
    drawn: usize,
}

struct Vertex {
    name: String,
    started: Instant,
    elapsed: Option<Duration>,
    cached: bool,
    error: bool,
    logs: VecDeque<String>,
    /// `WARN: …` lines of build checks, always shown.
    lints: Vec<String>,
}

impl State {
    fn apply(&mut self, e: Event) {
        match e {
            Event::Started { id, name } => {
                self.vertices.insert(
                    id,
                    Vertex {
                        name,
                        started: Instant::now(),
                        elapsed: None,
                        cached: false,
                        error: false,
                        logs: VecDeque::new(),
                        lints: Vec::new(),
                    },
                );
            }
            Event::Cached { id } => {
                if let Some(v) = self.vertices.get_mut(&id) {
                    v.cached = true;
                    v.elapsed = Some(Duration::ZERO);
                }
            }
            Event::Output { id, line } => {
                if let Some(v) = self.vertices.get_mut(&id) {
                    if v.logs.len() == LOG_LINES {
                        v.logs.pop_front();
                    }
                    // Plain mode prefixes the step's clock; the live view
                    // shows the text only.
                    let text = line.split_once(' ').map_or(line.as_str(), |(_, t)| t);
                    v.logs.push_back(text.to_string());
                }
            }
            Event::Done { id, elapsed } => {
                if let Some(v) = self.vertices.get_mut(&id) {
                    v.elapsed = Some(elapsed);
                    v.logs.clear();
                }
            }
            Event::Failed { id, .. } => {
                if let Some(v) = self.vertices.get_mut(&id) {
                    v.error = true;
                    v.elapsed = Some(v.started.elapsed());
                }
            }
            Event::Warning(w) => self.warnings.push(w),
            Event::Lint { id, warning } => {
                if let Some(v) = self.vertices.get_mut(&id) {
                    v.lints.push(format!("WARN: {}", warning.short()));
                }
            }
        }
    }

    /// The display as lines of at most `width` columns.
    fn lines(&self, width: usize, now: Instant) -> Vec<String> {
        let total = self.vertices.len();
        let done = self
            .vertices
            .values()
            .filter(|v| v.elapsed.is_some())
            .count();
        let secs = self.started.map_or(0.0, |s| (now - s).as_secs_f64());
        let failed = self.vertices.values().any(|v| v.error);
        let state = match (self.finished, failed) {
            (true, true) => " ERROR",
            (true, false) => " FINISHED",
            _ => "",
        };
        let mut out = vec![fit(
            &format!("[+] Building {secs:.1}s ({done}/{total}){state}"),
            width,
        )];
        for v in self.vertices.values() {
            let time = v.elapsed.unwrap_or_else(|| now - v.started).as_secs_f64();
            let prefix = if v.error {
                "ERROR "
            } else if v.cached {
                "CACHED "
            } else {
                ""
            };
            let left = format!(" => {prefix}{}", v.name);
            let right = if v.cached {
                String::new()
            } else {
                format!("{time:.1}s")
            };
            out.push(columns(&left, &right, width));
            for l in &v.lints {
                out.push(fit(&format!(" => => {l}"), width));
            }
            if v.elapsed.is_none() || v.error {
                for l in &v.logs {
                    out.push(fit(&format!(" => => # {l}"), width));
                }
            }
        }
        for w in &self.warnings {
            out.push(fit(&format!("WARNING: {w}"), width));
        }
        out
    }
}

/// `left` and `right` on one line of `width` columns, `left` cut to fit.
fn columns(left: &str, right: &str, width: usize) -> String {
    let room = width.saturating_sub(right.chars().count() + 1);
    let left = fit(left, room);
    let pad = width.saturating_sub(left.chars().count() + right.chars().count());
    format!("{left}{}{right}", " ".repeat(pad))
}

/// Cut to `width` characters (control characters shown as spaces, so a
/// step's output cannot move the cursor).
fn fit(s: &str, width: usize) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(width)
        .collect()
}

fn terminal_size() -> (usize, usize) {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills a winsize; stderr may not be a terminal, then
    // the call fails and the defaults apply.
    let r = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) };
    if r == 0 && ws.ws_col > 0 && ws.ws_row > 0 {
        (ws.ws_col as usize, ws.ws_row as usize)
    } else {
        (80, 24)
    }
}

fn paint_loop(shared: &Shared) {
    let mut state = shared.state.lock().unwrap();
    loop {
        let finished = state.finished;
        paint(&mut state, finished);
        if finished {
            return;
        }
        state = shared
            .wake
            .wait_timeout(state, Duration::from_millis(100))
            .unwrap()
            .0;
    }
}

/// Redraws in place; while running only what fits on the screen (the last
/// lines), at the end everything.
fn paint(state: &mut State, all: bool) {
    let (width, height) = terminal_size();
    let mut lines = state.lines(width.saturating_sub(1).max(20), Instant::now());
    if !all && lines.len() > height.saturating_sub(1) {
        let keep = height.saturating_sub(1).max(2);
        let header = lines[0].clone();
        let cut = lines.len() - (keep - 1);
        lines.drain(..cut);
        lines.insert(0, header);
    }
    let mut err = std::io::stderr().lock();
    let mut buf = String::new();
    if state.drawn > 0 {
        buf.push_str(&format!("\x1b[{}A", state.drawn));
    }
    for l in &lines {
        buf.push_str("\x1b[2K");
        buf.push_str(l);
        buf.push('\n');
    }
    // Clear what a longer previous frame left below.
    if state.drawn > lines.len() {
        buf.push_str("\x1b[J");
    }
    let _ = err.write_all(buf.as_bytes());
    let _ = err.flush();
    state.drawn = lines.len();
}

/// BuildKit's `--progress=plain` lines.
fn plain(lints: Arc<Mutex<Vec<LintWarning>>>) -> Progress {
    Progress::new(move |e| {
        let mut err = std::io::stderr().lock();
        let _ = match e {
            Event::Started { id, name } => writeln!(err, "#{id} {name}"),
            Event::Cached { id } => writeln!(err, "#{id} CACHED"),
            Event::Output { id, line } => writeln!(err, "#{id} {line}"),
            Event::Done { id, elapsed } => {
                writeln!(err, "#{id} DONE {:.1}s", elapsed.as_secs_f64())
            }
            Event::Failed { id, error } => {
                let first = error.lines().next().unwrap_or_default().to_string();
                writeln!(err, "#{id} ERROR: {first}")
            }
            Event::Warning(w) => writeln!(err, "WARNING: {w}"),
            Event::Lint { id, warning } => {
                let line = writeln!(err, "#{id} WARN: {}", warning.short());
                lints.lock().unwrap().push(warning);
                line
            }
        };
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> (State, Instant) {
        let t0 = Instant::now();
        let mut s = State {
            started: Some(t0),
            ..State::default()
        };
        s.apply(Event::Started {
            id: 1,
            name: "[internal] load metadata for base:1".into(),
        });
        s.apply(Event::Done {
            id: 1,
            elapsed: Duration::from_millis(10),
        });
        s.apply(Event::Started {
            id: 2,
            name: "[a 2/2] RUN make".into(),
        });
        for i in 0..8 {
            s.apply(Event::Output {
                id: 2,
                line: format!("0.{i} line {i}\x1b[2J"),
            });
        }
        s.apply(Event::Started {
            id: 3,
            name: "[b 2/2] COPY x /x".into(),
        });
        s.apply(Event::Cached { id: 3 });
        (s, t0)
    }

    #[test]
    fn running_steps_show_their_last_lines() {
        let (s, t0) = state();
        let lines = s.lines(60, t0 + Duration::from_secs(2));
        assert_eq!(lines[0], "[+] Building 2.0s (2/3)");
        assert!(
            lines[1].starts_with(" => [internal] load metadata for base:1"),
            "{lines:#?}"
        );
        assert!(lines[1].ends_with("0.0s"), "{lines:#?}");
        assert!(lines[2].starts_with(" => [a 2/2] RUN make"), "{lines:#?}");
        // The last six lines, without the plain clock, escapes defused.
        assert_eq!(lines[3], " => => # line 2 [2J");
        assert_eq!(lines[8], " => => # line 7 [2J");
        assert_eq!(lines[9].trim_end(), " => CACHED [b 2/2] COPY x /x");
        assert!(lines.iter().all(|l| l.chars().count() <= 60), "{lines:#?}");
    }

    #[test]
    fn finished_build_has_no_logs_and_says_so() {
        let (mut s, t0) = state();
        s.apply(Event::Done {
            id: 2,
            elapsed: Duration::from_millis(1500),
        });
        s.finished = true;
        let lines = s.lines(50, t0 + Duration::from_secs(3));
        assert_eq!(lines[0], "[+] Building 3.0s (3/3) FINISHED");
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines[2].ends_with("1.5s"), "{lines:#?}");
        assert_eq!(lines[2].chars().count(), 50);

        s.apply(Event::Failed {
            id: 3,
            error: "boom".into(),
        });
        assert!(s
            .lines(50, t0)
            .iter()
            .any(|l| l.starts_with(" => ERROR [b 2/2]")));
        assert!(s.lines(50, t0)[0].ends_with(" ERROR"));
    }

    #[test]
    fn long_names_are_cut_to_the_width() {
        assert_eq!(columns("abcdefghij", "1.0s", 10), "abcde 1.0s");
        assert_eq!(columns("ab", "1.0s", 10), "ab    1.0s");
        assert_eq!(fit("a\tb", 5), "a b");
    }
}
