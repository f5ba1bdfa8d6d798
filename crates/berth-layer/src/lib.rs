//! Image layer tars for berth.
//!
//! * [`unpack`]: apply a layer to a directory, either as an overlayfs lower
//!   directory ([`Whiteouts::Overlay`]) or onto a full root filesystem
//!   ([`Whiteouts::Apply`]), never touching anything outside the destination.
//! * [`write_diff_from_upper`], [`write_diff_dirs`], [`write_tree`]: produce
//!   deterministic OCI layer tars from an overlay upper directory, from two
//!   directory trees, or from one tree.
//! * [`LayerEncoder`]: compress (parallel gzip, multithreaded zstd) while
//!   computing the diff_id; [`decompress`] sniffs compressed input.
//!
//! * [`sparse`]: sparse tar members (GNU and PAX 0.0/0.1/1.0) written with
//!   their holes, for unpacking and for archives being staged.
//! * [`headers`]: a bound on the PAX records, long names and skipped data
//!   the `tar` crate reads between members (it holds headers in memory).
//!
//! Linux only: unpacking relies on `openat2(RESOLVE_IN_ROOT)` (Linux 5.6).

mod diff;
mod encode;
mod error;
pub mod headers;
mod native;
pub mod sparse;
mod sys;
mod tarwrite;
mod unpack;

pub use diff::{write_diff_dirs, write_diff_from_upper, write_tree, DiffOptions, DiffReport};
pub use encode::{decompress, Compression, EncodedLayer, LayerEncoder};
pub use error::LayerError;
pub use native::{materialize, upper_from_tree, ChangeClock, TreeDiff};
pub use sys::openat2_in_root;
pub use unpack::{unpack, UnpackOptions, UnpackReport, Whiteouts};
