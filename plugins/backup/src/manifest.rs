//! The manifest beside every archive: JSON Lines, written while the archive is written, so
//! neither is ever held in memory.
//!
//! ```text
//! {"format":"runloom-backup-manifest","version":1,"archive":"etc-20250102T030405Z.tar.zst","compression":"zstd","created":"2025-01-02T03:04:05Z","source":"/etc"}
//! {"type":"dir","path":"nginx","mode":"0755"}
//! {"type":"file","path":"nginx/nginx.conf","size":1482,"mode":"0644","sha256":"9f86d0…"}
//! {"type":"symlink","path":"nginx/sites-enabled/app","target":"../sites-available/app"}
//! {"archive_sha256":"2c26b4…","archive_bytes":52913,"entries":3,"bytes_in":1482}
//! ```
//!
//! One header line, one line per archive entry in archive order, one trailer line with the
//! archive's own SHA-256 (known only once the archive is complete). A manifest without its
//! trailer is incomplete and never verifies. `sha256sum` on the archive gives the trailer's
//! hash, so an operator can check an archive without Runloom.

use crate::name::Compression;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};

/// The `format` value of every manifest header.
pub const FORMAT: &str = "runloom-backup-manifest";
/// The manifest format version this plugin writes and reads.
pub const VERSION: u32 = 1;

/// The first line: what the manifest describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u32,
    /// The archive's file name (not its path: the pair may be moved together).
    pub archive: String,
    /// The archive's compression.
    pub compression: Compression,
    /// When `create` started, RFC 3339 UTC.
    pub created: String,
    /// The directory archived, as the plugin saw it (a guest path).
    pub source: String,
}

/// One archive entry. Paths are relative to the archived directory, `/`-separated.
///
/// WASI does not expose Unix permission bits, so modes are the ones the archive stores:
/// `0644` for files, `0755` for directories.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Entry {
    /// A regular file with its size and content hash.
    File {
        /// Path inside the archive.
        path: String,
        /// Size in bytes.
        size: u64,
        /// Permission bits, four octal digits.
        mode: String,
        /// SHA-256 of the content, lowercase hex.
        sha256: String,
    },
    /// A directory.
    Dir {
        /// Path inside the archive.
        path: String,
        /// Permission bits, four octal digits.
        mode: String,
    },
    /// A symbolic link, stored as a link (never followed).
    Symlink {
        /// Path inside the archive.
        path: String,
        /// Where the link points, as stored.
        target: String,
    },
}

impl Entry {
    /// The entry's path inside the archive.
    pub fn path(&self) -> &str {
        match self {
            Entry::File { path, .. } | Entry::Dir { path, .. } | Entry::Symlink { path, .. } => {
                path
            }
        }
    }
}

/// The last line: the archive as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trailer {
    /// SHA-256 of the archive file, lowercase hex.
    pub archive_sha256: String,
    /// Size of the archive file in bytes.
    pub archive_bytes: u64,
    /// Number of entry lines above.
    pub entries: u64,
    /// Bytes of file content archived (before compression).
    pub bytes_in: u64,
}

/// A line after the header.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Record {
    /// An entry line.
    Entry(Entry),
    /// The trailer line.
    Trailer(Trailer),
}

/// Permission bits as the manifest writes them.
pub fn mode_string(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

/// Writes a manifest line by line.
pub struct Writer<W: Write> {
    out: W,
}

impl<W: Write> Writer<W> {
    /// Start a manifest: write its header line.
    pub fn new(mut out: W, header: &Header) -> std::io::Result<Self> {
        write_line(&mut out, header)?;
        Ok(Self { out })
    }

    /// Append an entry line.
    pub fn entry(&mut self, entry: &Entry) -> std::io::Result<()> {
        write_line(&mut self.out, entry)
    }

    /// Write the trailer line and hand back the writer, flushed.
    pub fn finish(mut self, trailer: &Trailer) -> std::io::Result<W> {
        write_line(&mut self.out, trailer)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn write_line(out: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")
}

/// Reads a manifest line by line: [`Reader::open`] checks the header, then iteration yields
/// entries and finally the trailer. Errors name the line.
pub struct Reader<R: BufRead> {
    input: R,
    line: String,
    line_no: usize,
    after_trailer: bool,
}

impl<R: BufRead> Reader<R> {
    /// Read and check the header line.
    pub fn open(mut input: R) -> Result<(Header, Self), String> {
        let mut line = String::new();
        input
            .read_line(&mut line)
            .map_err(|e| format!("line 1: {e}"))?;
        let header: Header = serde_json::from_str(&line)
            .map_err(|e| format!("line 1: not a manifest header: {e}"))?;
        if header.format != FORMAT || header.version != VERSION {
            return Err(format!(
                "line 1: format `{}` version {} is not `{FORMAT}` version {VERSION}",
                header.format, header.version
            ));
        }
        let reader = Self {
            input,
            line,
            line_no: 1,
            after_trailer: false,
        };
        Ok((header, reader))
    }

    /// Read to the end and return the trailer, checking the entry count.
    pub fn trailer(self) -> Result<Trailer, String> {
        let mut entries = 0u64;
        for record in self {
            match record? {
                Record::Entry(_) => entries += 1,
                Record::Trailer(t) if t.entries == entries => return Ok(t),
                Record::Trailer(t) => {
                    return Err(format!(
                        "the trailer counts {} entries but {entries} are listed",
                        t.entries
                    ));
                }
            }
        }
        Err("no trailer line: the manifest is incomplete".to_string())
    }
}

impl<R: BufRead> Iterator for Reader<R> {
    type Item = Result<Record, String>;

    fn next(&mut self) -> Option<Self::Item> {
        self.line.clear();
        self.line_no += 1;
        let n = self.line_no;
        match self.input.read_line(&mut self.line) {
            Ok(0) => None,
            Err(e) => Some(Err(format!("line {n}: {e}"))),
            Ok(_) if self.after_trailer => Some(Err(format!("line {n}: after the trailer"))),
            Ok(_) => {
                let record = serde_json::from_str::<Record>(&self.line)
                    .map_err(|_| format!("line {n}: neither an entry nor a trailer"));
                self.after_trailer = matches!(record, Ok(Record::Trailer(_)));
                Some(record)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            format: FORMAT.into(),
            version: VERSION,
            archive: "etc-20250102T030405Z.tar.zst".into(),
            compression: Compression::Zstd,
            created: "2025-01-02T03:04:05Z".into(),
            source: "/etc".into(),
        }
    }

    fn entries() -> Vec<Entry> {
        vec![
            Entry::Dir {
                path: "nginx".into(),
                mode: mode_string(0o755),
            },
            Entry::File {
                path: "nginx/nginx.conf".into(),
                size: 3,
                mode: mode_string(0o644),
                sha256: "ab".repeat(32),
            },
            Entry::Symlink {
                path: "nginx/current".into(),
                target: "../sites/app".into(),
            },
        ]
    }

    fn trailer() -> Trailer {
        Trailer {
            archive_sha256: "cd".repeat(32),
            archive_bytes: 512,
            entries: 3,
            bytes_in: 3,
        }
    }

    fn written() -> String {
        let mut w = Writer::new(Vec::new(), &header()).unwrap();
        for e in entries() {
            w.entry(&e).unwrap();
        }
        String::from_utf8(w.finish(&trailer()).unwrap()).unwrap()
    }

    #[test]
    fn the_format_is_one_json_document_per_line() {
        let text = written();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(
            lines[0],
            r#"{"format":"runloom-backup-manifest","version":1,"archive":"etc-20250102T030405Z.tar.zst","compression":"zstd","created":"2025-01-02T03:04:05Z","source":"/etc"}"#
        );
        assert_eq!(lines[1], r#"{"type":"dir","path":"nginx","mode":"0755"}"#);
        assert_eq!(
            lines[2],
            format!(
                r#"{{"type":"file","path":"nginx/nginx.conf","size":3,"mode":"0644","sha256":"{}"}}"#,
                "ab".repeat(32)
            )
        );
        assert_eq!(
            lines[3],
            r#"{"type":"symlink","path":"nginx/current","target":"../sites/app"}"#
        );
        assert_eq!(
            lines[4],
            format!(
                r#"{{"archive_sha256":"{}","archive_bytes":512,"entries":3,"bytes_in":3}}"#,
                "cd".repeat(32)
            )
        );
    }

    #[test]
    fn reading_gives_back_what_was_written() {
        let text = written();
        let (h, reader) = Reader::open(text.as_bytes()).unwrap();
        assert_eq!(h, header());
        let records: Vec<Record> = reader.map(Result::unwrap).collect();
        let mut expected: Vec<Record> = entries().into_iter().map(Record::Entry).collect();
        expected.push(Record::Trailer(trailer()));
        assert_eq!(records, expected);
        let (_, reader) = Reader::open(text.as_bytes()).unwrap();
        assert_eq!(reader.trailer().unwrap(), trailer());
    }

    #[test]
    fn a_manifest_without_trailer_is_incomplete() {
        let text = written();
        let cut: String = text.lines().take(4).map(|l| format!("{l}\n")).collect();
        let (_, reader) = Reader::open(cut.as_bytes()).unwrap();
        assert_eq!(
            reader.trailer().unwrap_err(),
            "no trailer line: the manifest is incomplete"
        );
    }

    #[test]
    fn a_trailer_must_count_the_entries_and_end_the_file() {
        let text = written();
        let dropped: String = text
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        let (_, reader) = Reader::open(dropped.as_bytes()).unwrap();
        assert_eq!(
            reader.trailer().unwrap_err(),
            "the trailer counts 3 entries but 2 are listed"
        );
        let extra = format!("{text}{}\n", r#"{"type":"dir","path":"x","mode":"0755"}"#);
        let (_, reader) = Reader::open(extra.as_bytes()).unwrap();
        let last = reader.last().unwrap();
        assert_eq!(last.unwrap_err(), "line 6: after the trailer");
    }

    #[test]
    fn other_files_are_not_manifests() {
        assert!(
            Reader::open(&b"not json\n"[..])
                .err()
                .unwrap()
                .starts_with("line 1: not a manifest header")
        );
        let other = header_with(|h| h.version = 2);
        assert_eq!(
            Reader::open(other.as_bytes()).err().unwrap(),
            "line 1: format `runloom-backup-manifest` version 2 is not \
             `runloom-backup-manifest` version 1"
        );
        let bad_line = format!(
            "{}\n{{\"type\":\"fifo\",\"path\":\"p\"}}\n",
            line_of(&header())
        );
        let (_, mut reader) = Reader::open(bad_line.as_bytes()).unwrap();
        assert_eq!(
            reader.next().unwrap().unwrap_err(),
            "line 2: neither an entry nor a trailer"
        );
    }

    fn line_of(h: &Header) -> String {
        serde_json::to_string(h).unwrap()
    }

    fn header_with(f: impl Fn(&mut Header)) -> String {
        let mut h = header();
        f(&mut h);
        format!("{}\n", line_of(&h))
    }

    #[test]
    fn modes_are_four_octal_digits() {
        assert_eq!(mode_string(0o644), "0644");
        assert_eq!(mode_string(0o100755), "0755");
        assert_eq!(mode_string(0o4755), "4755");
    }
}
