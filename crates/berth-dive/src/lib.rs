//! `berth dive`'s analysis: what each layer of an image adds, changes and
//! removes, and how much space it wastes, computed exactly as dive 0.13.1
//! computes it, plus berth's own figures.
//!
//! Pure: the input is an image config (its history pairs layers with the
//! commands that made them) and the layer blobs as [`std::io::Read`]
//! streams (gzip, zstd or plain tar, read once, never unpacked); the
//! output is an [`Analysis`]. No terminal, no I/O of its own, so the CLI,
//! the terminal UI and an API can all call it.
//!
//! - [`tree`]: dive's file tree (nodes per path component, stacking).
//! - [`layer`]: one layer stream -> its tree.
//! - [`analysis`]: efficiency, wasted bytes, history pairing, berth's
//!   reclaimable / duplicate / metadata-only figures.
//! - [`archive`]: a docker-archive analysed in one pass, as dive reads it.
//! - [`export`]: dive's `--json` schema (+ the `berth` object).
//! - [`ci`]: dive's CI rules, `.dive-ci`, the report.
//! - [`gosort`], [`gofmt`]: Go's `sort.Sort` and formatting, where dive's
//!   output depends on them.

pub mod analysis;
pub mod archive;
pub mod ci;
pub mod export;
pub mod gofmt;
pub mod gosort;
pub mod layer;
pub mod tree;

pub use analysis::{analyze, Analysis, Analyzer, Error, Ignore, Layer};
