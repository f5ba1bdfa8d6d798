use std::io;
use std::path::PathBuf;

/// Everything that can go wrong reading, writing or applying a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The tar stream itself is unreadable (truncated, bad header, bad
    /// compression).
    #[error(
        "reading the layer tar failed: {0} (is the blob a complete, uncompressed tar stream?)"
    )]
    Tar(#[source] io::Error),

    /// A tar entry that cannot be applied as asked: it names no path, is a
    /// whiteout of `.`/`..`, is a hard link whose target does not exist in
    /// the destination, or has a type berth does not handle.
    #[error("layer entry {path:?}: {reason}")]
    Entry { path: String, reason: String },

    /// A filesystem operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Writing the output stream failed.
    #[error("writing the layer stream failed: {0}")]
    Write(#[source] io::Error),
}

impl LayerError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LayerError::Io {
            what,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn entry(path: &[u8], reason: impl Into<String>) -> Self {
        LayerError::Entry {
            path: String::from_utf8_lossy(path).into_owned(),
            reason: reason.into(),
        }
    }
}
