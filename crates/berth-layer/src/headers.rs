//! A bound on what the `tar` crate reads between two members' data.
//!
//! The `tar` crate reads a member's PAX records and GNU long names into
//! memory whole, however large their header says they are, and reads
//! through (skips) the data of members nobody read: a gzip of a few MB can
//! announce a PAX header of 10 GB, which would be allocated, or a
//! directory "holding" a terabyte, which would be decompressed for nothing.
//! [`budgeted`] wraps the reader under the `tar` crate and [`HeaderBudget::entries`]
//! its member iterator: while the iterator looks for the next member
//! (headers, extension records, long names, skipped data, padding) at most
//! `limit` bytes may be read, else that read fails with
//! [`io::ErrorKind::InvalidData`]. A member's own data, read by the
//! caller, is not counted (its size is known and bounded by the caller).

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Default bound: far above any real header (PAX records of a file with
/// every extended attribute Linux allows are under 1 MiB), far below what
/// hurts.
pub const MAX_HEADER_BYTES: u64 = 16 << 20;

#[derive(Debug)]
struct State {
    counting: AtomicBool,
    used: AtomicU64,
    limit: u64,
}

/// The reader to give `tar::Archive::new`.
#[derive(Debug)]
pub struct Budgeted<R> {
    inner: R,
    state: Arc<State>,
}

/// Switches the counting of a [`Budgeted`] reader on around each search for
/// the next member.
#[derive(Debug, Clone)]
pub struct HeaderBudget {
    state: Arc<State>,
}

/// `reader`, bounded to `limit` bytes between members once its archive's
/// entries go through [`HeaderBudget::entries`].
pub fn budgeted<R: Read>(reader: R, limit: u64) -> (Budgeted<R>, HeaderBudget) {
    let state = Arc::new(State {
        counting: AtomicBool::new(false),
        used: AtomicU64::new(0),
        limit,
    });
    (
        Budgeted {
            inner: reader,
            state: state.clone(),
        },
        HeaderBudget { state },
    )
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let s = &self.state;
        if !s.counting.load(Ordering::Relaxed) {
            return self.inner.read(buf);
        }
        let used = s.used.load(Ordering::Relaxed);
        let left = s.limit.saturating_sub(used);
        if left == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a tar member's headers (PAX records, long names) or data skipped between \
                     members take more than {} MiB; refusing the archive",
                    s.limit >> 20
                ),
            ));
        }
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let got = self.inner.read(&mut buf[..n])?;
        s.used.store(used + got as u64, Ordering::Relaxed);
        Ok(got)
    }
}

impl HeaderBudget {
    /// The members of an archive whose reader is this budget's.
    pub fn entries<'a, R: Read>(&self, entries: tar::Entries<'a, R>) -> Entries<'a, R> {
        Entries {
            inner: entries,
            state: self.state.clone(),
        }
    }
}

/// `tar::Entries`, with the budget counting while it looks for a member.
pub struct Entries<'a, R: 'a + Read> {
    inner: tar::Entries<'a, R>,
    state: Arc<State>,
}

impl<'a, R: Read> Iterator for Entries<'a, R> {
    type Item = io::Result<tar::Entry<'a, R>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.state.used.store(0, Ordering::Relaxed);
        self.state.counting.store(true, Ordering::Relaxed);
        let next = self.inner.next();
        self.state.counting.store(false, Ordering::Relaxed);
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar whose first member is a PAX header announcing `size` bytes
    /// (of which `sent` follow), as a hostile archive would.
    fn pax_bomb(size: u64, sent: usize) -> Vec<u8> {
        let mut h = tar::Header::new_ustar();
        h.set_path("PaxHeaders/x").unwrap();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(size);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend(std::iter::repeat_n(b'a', sent));
        out
    }

    #[test]
    fn a_huge_pax_header_is_refused_not_allocated() {
        let data = pax_bomb(1 << 40, 3 << 20);
        let (r, budget) = budgeted(&data[..], 1 << 20);
        let mut a = tar::Archive::new(r);
        let first = budget.entries(a.entries().unwrap()).next().unwrap();
        let e = first.err().expect("refused");
        assert!(e.to_string().contains("more than 1 MiB"), "{e}");
    }

    #[test]
    fn member_data_is_not_counted() {
        let mut b = tar::Builder::new(Vec::new());
        for name in ["a", "b"] {
            let data = vec![7u8; 3 << 20];
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let (r, budget) = budgeted(&tar[..], 1 << 20);
        let mut a = tar::Archive::new(r);
        let mut n = 0;
        for e in budget.entries(a.entries().unwrap()) {
            let mut e = e.unwrap();
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            assert_eq!(v.len(), 3 << 20);
            n += 1;
        }
        assert_eq!(n, 2);
        // Data nobody reads is skipped by the tar crate: counted.
        let (r, budget) = budgeted(&tar[..], 1 << 20);
        let mut a = tar::Archive::new(r);
        let r: Vec<_> = budget.entries(a.entries().unwrap()).collect();
        assert!(r[1].is_err(), "skipping 3 MiB is over the budget");
    }
}
