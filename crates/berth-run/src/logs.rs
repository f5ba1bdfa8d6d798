//! Docker's json-file log: one JSON object per line of output,
//! `{"log":"text\n","stream":"stdout","time":"RFC3339Nano"}`. Partial lines
//! are kept until their newline (or 16 KiB, or the end), as Docker does.

use std::fs;
use std::io::{self, BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::time;

const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub log: String,
    pub stream: String,
    pub time: String,
}

/// Writes a container's output to its log as it arrives.
pub struct LogWriter {
    file: fs::File,
    pending: [Vec<u8>; 2],
}

impl LogWriter {
    pub fn open(path: &Path) -> io::Result<LogWriter> {
        let file = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)?;
        Ok(LogWriter {
            file,
            pending: [Vec::new(), Vec::new()],
        })
    }

    /// `stream` 0 = stdout, 1 = stderr.
    pub fn write(&mut self, stream: usize, mut data: &[u8]) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.pending[stream].extend_from_slice(&data[..=i]);
                    data = &data[i + 1..];
                    self.flush_stream(stream);
                }
                None => {
                    self.pending[stream].extend_from_slice(data);
                    data = &[];
                    if self.pending[stream].len() >= MAX_LINE {
                        self.flush_stream(stream);
                    }
                }
            }
        }
    }

    fn flush_stream(&mut self, stream: usize) {
        if self.pending[stream].is_empty() {
            return;
        }
        let bytes = std::mem::take(&mut self.pending[stream]);
        let entry = Entry {
            log: String::from_utf8_lossy(&bytes).into_owned(),
            stream: if stream == 0 { "stdout" } else { "stderr" }.into(),
            time: time::rfc3339(time::now_ns()),
        };
        let mut line = serde_json::to_vec(&entry).expect("serializable");
        line.push(b'\n');
        // A full disk loses log lines, not the container.
        let _ = self.file.write_all(&line);
    }

    /// Writes what is left of unterminated lines.
    pub fn finish(&mut self) {
        self.flush_stream(0);
        self.flush_stream(1);
    }
}

/// The entries of a log file (damaged lines skipped), from byte `from`;
/// returns them and the offset after the last complete line.
pub fn read_from(path: &Path, from: u64) -> io::Result<(Vec<Entry>, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = fs::File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let entries = io::BufReader::new(&buf[..complete])
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect();
    Ok((entries, from + complete as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_partials() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.log");
        let mut w = LogWriter::open(&p).unwrap();
        w.write(0, b"a\nb");
        w.write(1, b"err\n");
        w.write(0, b"c\n\"q\"");
        w.finish();
        let (e, end) = read_from(&p, 0).unwrap();
        let logs: Vec<(&str, &str)> = e
            .iter()
            .map(|e| (e.stream.as_str(), e.log.as_str()))
            .collect();
        assert_eq!(
            logs,
            [
                ("stdout", "a\n"),
                ("stderr", "err\n"),
                ("stdout", "bc\n"),
                ("stdout", "\"q\"")
            ]
        );
        assert_eq!(end, fs::metadata(&p).unwrap().len());
        assert!(e[0].time.ends_with('Z'));
    }
}
