//! Compressing a layer while computing its diff_id, and sniffing compressed
//! layers on the way in.
//!
//! Gzip is parallel: the uncompressed stream is cut into fixed 1 MiB blocks,
//! each compressed as its own gzip member on a worker thread and written in
//! order. Concatenated members are valid gzip (RFC 1952 section 2.2; Go's
//! `gzip.Reader`, zlib and `gzip -d` read them all). The block size does not
//! depend on the number of threads or on how the caller chunks its writes,
//! so the output is byte-for-byte reproducible on any machine.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use sha2::{Digest as _, Sha256};

/// How to compress a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    /// `level` 0-9 (6 is gzip's default).
    Gzip {
        level: u32,
    },
    /// `level` 1-22 (3 is zstd's default).
    Zstd {
        level: i32,
    },
}

/// The identity of the uncompressed layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedLayer {
    /// `sha256:<hex>` of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: String,
    pub uncompressed_size: u64,
}

const BLOCK: usize = 1 << 20;

/// A `Write` that hashes and counts the uncompressed tar while compressing it
/// into `W`.
pub struct LayerEncoder<W: Write> {
    hasher: Sha256,
    size: u64,
    inner: Inner<W>,
}

enum Inner<W: Write> {
    Plain(W),
    Gzip(ParallelGzip<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> LayerEncoder<W> {
    pub fn new(out: W, compression: Compression) -> io::Result<Self> {
        let inner = match compression {
            Compression::None => Inner::Plain(out),
            Compression::Gzip { level } => Inner::Gzip(ParallelGzip::new(out, level.min(9))),
            Compression::Zstd { level } => {
                let mut enc = zstd::stream::write::Encoder::new(out, level)?;
                // zstd's output is identical for any worker count >= 1, so
                // always use the threaded mode: the bytes then do not depend
                // on the machine.
                enc.multithread(threads() as u32)?;
                enc.include_checksum(true)?;
                Inner::Zstd(enc)
            }
        };
        Ok(LayerEncoder {
            hasher: Sha256::new(),
            size: 0,
            inner,
        })
    }

    /// Flush everything and return the writer and the layer's identity.
    pub fn finish(self) -> io::Result<(W, EncodedLayer)> {
        let out = match self.inner {
            Inner::Plain(mut w) => {
                w.flush()?;
                w
            }
            Inner::Gzip(g) => g.finish()?,
            Inner::Zstd(z) => {
                let mut w = z.finish()?;
                w.flush()?;
                w
            }
        };
        let hex: String = self
            .hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok((
            out,
            EncodedLayer {
                diff_id: format!("sha256:{hex}"),
                uncompressed_size: self.size,
            },
        ))
    }
}

impl<W: Write> Write for LayerEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.inner {
            Inner::Plain(w) => w.write(buf)?,
            Inner::Gzip(g) => g.write(buf)?,
            Inner::Zstd(z) => z.write(buf)?,
        };
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    /// Flushes what the inner writer already has; a partial gzip block stays
    /// buffered (cutting it early would change the output bytes).
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Plain(w) => w.flush(),
            Inner::Gzip(g) => g.out.flush(),
            Inner::Zstd(z) => z.get_mut().flush(),
        }
    }
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Bytes of a block tried at level 1 to judge whether it compresses.
const SAMPLE: usize = 64 << 10;

/// Whether deflate would gain (almost) nothing on `data`: random or
/// already-compressed content. Judged on a sample, so it costs a few
/// percent of compressing the block; depends only on the data, so the
/// output stays deterministic.
fn incompressible(data: &[u8]) -> bool {
    if data.len() < 2 * SAMPLE {
        return false;
    }
    let start = (data.len() - SAMPLE) / 2;
    let sample = &data[start..start + SAMPLE];
    let mut enc = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(SAMPLE + 1024),
        flate2::Compression::fast(),
    );
    if enc.write_all(sample).is_err() {
        return false;
    }
    enc.finish()
        .is_ok_and(|c| c.len() * 100 >= sample.len() * 97)
}

fn gzip_member(data: &[u8], level: u32) -> io::Result<Vec<u8>> {
    // Incompressible blocks are stored (deflate level 0: a copy plus the
    // CRC), which keeps layers of random or compressed files at disk speed
    // instead of paying for compression that saves nothing.
    let level = if level > 0 && incompressible(data) {
        0
    } else {
        level
    };
    // GzBuilder's header has mtime 0 and no name: deterministic.
    let mut enc = flate2::GzBuilder::new().write(
        Vec::with_capacity(data.len() / 2 + 64),
        flate2::Compression::new(level),
    );
    enc.write_all(data)?;
    enc.finish()
}

struct Worker {
    jobs: SyncSender<Vec<u8>>,
    results: Receiver<io::Result<Vec<u8>>>,
    handle: JoinHandle<()>,
}

/// Round-robin over workers: block i goes to worker i % n, so reading the
/// results in the same rotation yields them in stream order.
struct ParallelGzip<W: Write> {
    out: W,
    level: u32,
    buf: Vec<u8>,
    workers: Vec<Worker>,
    /// Index of the worker that gets the next block.
    next: usize,
    /// Blocks sent and not yet written, oldest first (as worker indices).
    pending: std::collections::VecDeque<usize>,
    /// available_parallelism() reads cgroup files: ask once.
    threads: usize,
}

impl<W: Write> ParallelGzip<W> {
    fn new(out: W, level: u32) -> Self {
        ParallelGzip {
            out,
            level,
            buf: Vec::with_capacity(BLOCK),
            workers: Vec::new(),
            next: 0,
            pending: Default::default(),
            threads: threads(),
        }
    }

    fn spawn_workers(&mut self) -> io::Result<()> {
        for i in 0..self.threads {
            // One job queued per worker beyond the one it is working on keeps
            // memory at about 3 blocks per thread.
            let (jtx, jrx) = sync_channel::<Vec<u8>>(1);
            let (rtx, rrx) = sync_channel::<io::Result<Vec<u8>>>(2);
            let level = self.level;
            let handle = std::thread::Builder::new()
                .name(format!("berth-gzip-{i}"))
                .spawn(move || {
                    for block in jrx {
                        if rtx.send(gzip_member(&block, level)).is_err() {
                            break;
                        }
                    }
                })?;
            self.workers.push(Worker {
                jobs: jtx,
                results: rrx,
                handle,
            });
        }
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(w) = self.pending.pop_front() else {
            return Ok(());
        };
        let member = self.workers[w]
            .results
            .recv()
            .map_err(|_| io::Error::other("gzip worker thread died"))??;
        self.out.write_all(&member)
    }

    fn dispatch(&mut self, block: Vec<u8>) -> io::Result<()> {
        if self.threads == 1 {
            let member = gzip_member(&block, self.level)?;
            return self.out.write_all(&member);
        }
        if self.workers.is_empty() {
            self.spawn_workers()?;
        }
        // Bound the work in flight to two blocks per worker.
        while self.pending.len() >= 2 * self.workers.len() {
            self.write_oldest()?;
        }
        let w = self.next;
        self.workers[w]
            .jobs
            .send(block)
            .map_err(|_| io::Error::other("gzip worker thread died"))?;
        self.pending.push_back(w);
        self.next = (w + 1) % self.workers.len();
        Ok(())
    }

    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let total = data.len();
        while !data.is_empty() {
            let take = (BLOCK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == BLOCK {
                let block = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK));
                self.dispatch(block)?;
            }
        }
        Ok(total)
    }

    fn finish(mut self) -> io::Result<W> {
        // An empty stream still needs one (empty) member to be valid gzip.
        if !self.buf.is_empty() || (self.pending.is_empty() && self.workers.is_empty()) {
            let block = std::mem::take(&mut self.buf);
            self.dispatch(block)?;
        }
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        for w in std::mem::take(&mut self.workers) {
            drop(w.jobs);
            let _ = w.handle.join();
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Wrap a possibly compressed layer stream: gzip (all members) and zstd are
/// recognised by their magic bytes, anything else is passed through as is.
pub fn decompress<'a, R: Read + Send + 'a>(reader: R) -> io::Result<Box<dyn Read + Send + 'a>> {
    let mut r = BufReader::with_capacity(256 * 1024, reader);
    let head = r.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(r)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(r)?))
    } else {
        Ok(Box::new(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<u8> {
        // Compressible but not trivial.
        (0..n)
            .map(|i| ((i * 7919) % 251) as u8 ^ (i / 4096) as u8)
            .collect()
    }

    fn encode(data: &[u8], c: Compression, chunk: usize) -> (Vec<u8>, EncodedLayer) {
        let mut enc = LayerEncoder::new(Vec::new(), c).unwrap();
        for part in data.chunks(chunk.max(1)) {
            enc.write_all(part).unwrap();
        }
        enc.finish().unwrap()
    }

    #[test]
    fn diff_id_is_sha256_of_input() {
        let data = sample(3 * BLOCK + 123);
        let expect: String = Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        for c in [
            Compression::None,
            Compression::Gzip { level: 6 },
            Compression::Zstd { level: 3 },
        ] {
            let (out, id) = encode(&data, c, 100_000);
            assert_eq!(id.diff_id, format!("sha256:{expect}"), "{c:?}");
            assert_eq!(id.uncompressed_size, data.len() as u64);
            let mut back = Vec::new();
            decompress(&out[..])
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "{c:?} round trip");
        }
    }

    #[test]
    fn gzip_is_deterministic_whatever_the_write_sizes() {
        let data = sample(2 * BLOCK + 5);
        let (a, _) = encode(&data, Compression::Gzip { level: 6 }, 1 << 20);
        let (b, _) = encode(&data, Compression::Gzip { level: 6 }, 4097);
        assert_eq!(a, b);
        // Three members, each with mtime 0 and no file name.
        assert_eq!(&a[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    }

    #[test]
    fn incompressible_blocks_are_stored_and_round_trip() {
        // xorshift noise: incompressible; a repeated pattern: compressible.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let noise: Vec<u8> = (0..BLOCK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(incompressible(&noise));
        assert!(!incompressible(&vec![b'a'; BLOCK]));
        let mut data = noise.clone();
        data.extend(std::iter::repeat_n(b'z', BLOCK));
        let (out, _) = encode(&data, Compression::Gzip { level: 6 }, 65536);
        // Stored noise costs its size plus headers; the zeros shrink to little.
        assert!(
            out.len() > BLOCK && out.len() < BLOCK + BLOCK / 50,
            "{}",
            out.len()
        );
        let mut back = Vec::new();
        decompress(&out[..])
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn empty_gzip_is_valid() {
        let (out, id) = encode(&[], Compression::Gzip { level: 6 }, 1);
        let mut back = Vec::new();
        decompress(&out[..])
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert!(back.is_empty());
        assert_eq!(id.uncompressed_size, 0);
    }
}
