//! The local build context, as Docker/BuildKit sees it.
//!
//! * [`IgnoreMatcher`]: `.dockerignore` files and `COPY --exclude` patterns
//!   with moby/patternmatcher's semantics (the same Go-regex translation,
//!   exceptions, parent-directory matching, and BuildKit's rule that
//!   `<Dockerfile>.dockerignore` beats `<context>/.dockerignore`).
//! * [`Context`]: the context directory with ignored paths invisible.
//!   [`Context::resolve_sources`] resolves `COPY`/`ADD` sources like
//!   BuildKit's file op, [`Context::walk`] lists what a copy of one source
//!   reads, and [`Context::checksum`] hashes exactly that (paths, types,
//!   permission bits, sizes, link targets, contents; never times, inode
//!   numbers or owners), reading files on several threads.
//! * [`StatCache`]: remembers the content hash of each file under its
//!   (size, mtime, ctime, inode, mode), like git's index, so an unchanged
//!   context is checksummed without reading any file.
//!
//! ```no_run
//! use berth_context::{Context, IgnoreMatcher, StatCache};
//! # fn main() -> Result<(), berth_context::Error> {
//! let dir = std::path::Path::new("/src/app");
//! let ignore = IgnoreMatcher::load(dir, Some(&dir.join("Dockerfile")))?;
//! let ctx = Context::open(dir, ignore, Some(StatCache::load("/var/cache/app.statcache")))?;
//! let sources = ctx.resolve_sources(&["src/".to_string(), "*.toml".to_string()])?;
//! for source in &sources {
//!     for entry in ctx.walk(source) {
//!         let entry = entry?;
//!         println!("{} {:?}", entry.rel_path.display(), entry.kind);
//!     }
//! }
//! let key = ctx.checksum(&["src/".to_string(), "*.toml".to_string()])?;
//! println!("{key}");
//! ctx.save_stat_cache()?;
//! # Ok(()) }
//! ```
//!
//! Where berth deliberately differs from BuildKit: a source that climbs out
//! of the context (`../x`, or a symlink whose relative target climbs above
//! the root) is an error instead of being clamped to the root, so a typo
//! is reported rather than silently copying the wrong file.

mod checksum;
mod context;
mod gomatch;
mod ignore;
mod pattern;
mod statcache;

use std::path::{Path, PathBuf};

pub use checksum::{ChecksumStats, ContentDigest};
pub use context::{Context, Entry, FileKind, Source, Walk};
pub use ignore::IgnoreMatcher;

/// Go's `filepath.Match` of one path component, as COPY sources and
/// `.dockerignore` use it; a malformed pattern matches nothing.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    gomatch::match_path(pattern.as_bytes(), name.as_bytes()).unwrap_or(false)
}
pub use statcache::StatCache;

/// Everything that can go wrong with a build context.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `.dockerignore` line or `--exclude` pattern Docker would refuse too.
    #[error("invalid pattern {pattern:?} in {origin}: {reason}")]
    InvalidPattern {
        pattern: String,
        origin: String,
        reason: String,
    },
    /// A COPY/ADD source that does not exist in the (filtered) context.
    #[error(
        "failed to calculate checksum of \"/{path}\": not found (source {pattern:?} is not in the build context or is excluded by .dockerignore)"
    )]
    NotFound { pattern: String, path: String },
    /// A COPY/ADD source that leaves the context directory.
    #[error("forbidden path outside the build context: {pattern} (sources are relative to the context directory; move the file into the context)")]
    OutsideContext { pattern: String },
    /// A symlink chain that does not end.
    #[error("too many levels of symbolic links while resolving {pattern:?}")]
    TooManyLinks { pattern: String },
    /// The context directory itself is unusable.
    #[error("build context {path}: {reason}")]
    BadContext { path: PathBuf, reason: String },
    /// A file-system error on a path inside the context (or on the cache).
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Lowercase hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}
