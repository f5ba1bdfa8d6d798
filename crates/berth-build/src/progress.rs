//! Build progress as events; the command line renders them (BuildKit's
//! `--progress=plain` format, or nothing with `quiet`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Event {
    /// A vertex started: `#id [stage step/total] INSTRUCTION`.
    Started {
        id: usize,
        name: String,
    },
    /// Its result came from the cache.
    Cached {
        id: usize,
    },
    /// A chunk of a RUN step's output (a line, without the newline).
    Output {
        id: usize,
        line: String,
    },
    Done {
        id: usize,
        elapsed: Duration,
    },
    Failed {
        id: usize,
        error: String,
    },
    /// Free-form notes (warnings, unused build args).
    Warning(String),
    /// A build check's finding (BuildKit's `#id WARN: RULE: …`), on the
    /// vertex that loaded the Dockerfile.
    Lint {
        id: usize,
        warning: berth_dockerfile::LintWarning,
    },
}

/// The build's progress sink and vertex numbering.
#[derive(Clone)]
pub struct Progress {
    sink: Arc<dyn Fn(Event) + Send + Sync>,
    next: Arc<AtomicUsize>,
}

impl Progress {
    pub fn new(sink: impl Fn(Event) + Send + Sync + 'static) -> Progress {
        Progress {
            sink: Arc::new(sink),
            next: Arc::new(AtomicUsize::new(1)),
        }
    }

    pub fn silent() -> Progress {
        Progress::new(|_| {})
    }

    pub fn emit(&self, e: Event) {
        (self.sink)(e)
    }

    /// Starts a numbered vertex.
    pub fn start(&self, name: String) -> usize {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.emit(Event::Started { id, name });
        id
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}
