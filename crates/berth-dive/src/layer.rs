//! Reading one layer: the blob is streamed once (gzip, zstd or plain tar,
//! told by its first bytes), every entry becomes a node of the layer's
//! [`FileTree`] and every file's content is hashed on the way; nothing is
//! written anywhere.

use std::io::{BufRead, BufReader, Read};

use crate::gofmt::clean_path;
use crate::tree::{mode, FileInfo, FileTree, DOUBLE_WHITEOUT_PREFIX};

/// A layer as dive sees it, plus what berth's own figures need.
#[derive(Debug, Clone, Default)]
pub struct LayerTree {
    pub tree: FileTree,
    /// Directories this layer made opaque (`DIR/.wh..wh..opq`), as
    /// `/DIR` paths; dive ignores them, berth's reclaimable bytes do not.
    pub opaque: Vec<String>,
    /// Bytes of the blob as stored (compressed) and of the tar stream.
    pub blob_bytes: u64,
    pub tar_bytes: u64,
}

/// Why a layer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("not a tar archive ({0})")]
    NotTar(String),
    #[error("corrupt {0} stream: {1}")]
    Corrupt(&'static str, String),
    #[error("{0}")]
    Unsupported(String),
    #[error("reading the layer: {0}")]
    Io(std::io::Error),
}

struct Counting<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Compression of a layer blob, by magic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

pub fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Reads a layer blob (any of the three encodings) into its tree.
pub fn read_layer(blob: impl Read) -> Result<LayerTree, LayerError> {
    let mut blob = BufReader::with_capacity(256 << 10, Counting { inner: blob, n: 0 });
    let head = blob.fill_buf().map_err(LayerError::Io)?;
    let kind = sniff(head);
    let (mut out, blob_bytes) = match kind {
        Compression::Gzip => {
            let mut dec = Counting {
                inner: flate2::read::MultiGzDecoder::new(blob),
                n: 0,
            };
            let t = read_tar(&mut dec, "gzip")?;
            let n = dec.inner.into_inner().into_inner().n;
            (
                LayerTree {
                    tar_bytes: dec.n,
                    ..t
                },
                n,
            )
        }
        Compression::Zstd => {
            let zd = zstd::stream::read::Decoder::with_buffer(blob)
                .map_err(|e| LayerError::Corrupt("zstd", e.to_string()))?;
            let mut dec = Counting { inner: zd, n: 0 };
            let t = read_tar(&mut dec, "zstd")?;
            let n = dec.inner.finish().into_inner().n;
            (
                LayerTree {
                    tar_bytes: dec.n,
                    ..t
                },
                n,
            )
        }
        Compression::None => {
            let t = read_tar(&mut blob, "tar")?;
            let n = blob.into_inner().n;
            (LayerTree { tar_bytes: n, ..t }, n)
        }
    };
    out.blob_bytes = blob_bytes;
    Ok(out)
}

fn stream_error(what: &'static str, e: std::io::Error) -> LayerError {
    let msg = e.to_string();
    // The tar crate quotes the bytes it could not parse: keep it short.
    let header = msg.contains("cksum") || msg.contains("checksum") || msg.contains("header");
    let short = if header {
        "a header is not a tar header".to_string()
    } else {
        let mut m: String = msg.chars().take(100).collect();
        if m.len() < msg.len() {
            m.push('…');
        }
        m
    };
    if what == "tar" && (header || msg.contains("entire block")) {
        LayerError::NotTar(short)
    } else if header {
        LayerError::NotTar(format!("{what}-compressed, but {short}"))
    } else if matches!(
        e.kind(),
        std::io::ErrorKind::InvalidInput
            | std::io::ErrorKind::InvalidData
            | std::io::ErrorKind::UnexpectedEof
    ) || msg.contains("entire block")
    {
        LayerError::Corrupt(what, short)
    } else {
        LayerError::Io(std::io::Error::new(e.kind(), short))
    }
}

fn read_tar(r: &mut dyn Read, what: &'static str) -> Result<LayerTree, LayerError> {
    let mut archive = tar::Archive::new(r);
    let mut out = LayerTree::default();
    let mut buf = vec![0u8; 128 << 10];
    let entries = archive.entries().map_err(|e| stream_error(what, e))?;
    for entry in entries {
        let mut e = entry.map_err(|e| stream_error(what, e))?;
        let raw_name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let name = clean_path(&raw_name);
        let header = e.header();
        let mut type_flag = header.as_bytes()[156];
        if type_flag == 0 {
            type_flag = if raw_name.ends_with('/') { b'5' } else { b'0' };
        }
        if type_flag == b'g' {
            // dive refuses the layer, as Go's reader hands it the header.
            return Err(LayerError::Unsupported(format!(
                "unexpected tar entry (XGlobalHeader): name={name}"
            )));
        }
        let raw_mode = header.mode().unwrap_or(0);
        let mut uid = header.uid().unwrap_or(0) as i64;
        let mut gid = header.gid().unwrap_or(0) as i64;
        let link_name = e
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .unwrap_or_default();
        if let Ok(Some(pax)) = e.pax_extensions() {
            for ext in pax.flatten() {
                let v = ext.value().ok().and_then(|v| v.parse::<i64>().ok());
                match (ext.key(), v) {
                    (Ok("uid"), Some(v)) => uid = v,
                    (Ok("gid"), Some(v)) => gid = v,
                    _ => {}
                }
            }
        }
        let size = e.size() as i64;
        let file_mode = go_mode(raw_mode, type_flag);
        let mut hash = 0;
        if type_flag != b'5' {
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            loop {
                let n = e.read(&mut buf).map_err(|e| stream_error(what, e))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            hash = h.digest();
        }
        if name == "." {
            continue;
        }
        out.tree.file_size += size as u64;
        let base = name.rsplit('/').next().unwrap_or("");
        if base.starts_with(DOUBLE_WHITEOUT_PREFIX) {
            let dir = clean_path(&format!(
                "/{}",
                name.rsplit_once('/').map_or("", |(d, _)| d)
            ));
            out.opaque.push(dir);
        }
        let info = FileInfo {
            path: name.clone(),
            type_flag,
            link_name,
            hash,
            size,
            file_mode,
            uid,
            gid,
            is_dir: file_mode & mode::DIR != 0,
        };
        out.tree.add_path(&name, info);
    }
    Ok(out)
}

/// Go's `tar.Header.FileInfo().Mode()`.
fn go_mode(m: u32, type_flag: u8) -> u32 {
    let mut mode = m & 0o777;
    if m & 0o4000 != 0 {
        mode |= mode::SETUID;
    }
    if m & 0o2000 != 0 {
        mode |= mode::SETGID;
    }
    if m & 0o1000 != 0 {
        mode |= mode::STICKY;
    }
    match m & !0o7777 {
        0o040000 => mode |= mode::DIR,
        0o010000 => mode |= mode::NAMED_PIPE,
        0o120000 => mode |= mode::SYMLINK,
        0o060000 => mode |= mode::DEVICE,
        0o020000 => mode |= mode::DEVICE | mode::CHAR_DEVICE,
        0o140000 => mode |= mode::SOCKET,
        _ => {}
    }
    match type_flag {
        b'2' => mode |= mode::SYMLINK,
        b'3' => mode |= mode::DEVICE | mode::CHAR_DEVICE,
        b'4' => mode |= mode::DEVICE,
        b'5' => mode |= mode::DIR,
        b'6' => mode |= mode::NAMED_PIPE,
        _ => {}
    }
    mode
}
