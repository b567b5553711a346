//! Streaming one data file of an export: gunzip, split lines, parse, hand over, verify.
//!
//! [`read_data_file`] never holds the whole file: it hashes the compressed bytes as they stream past (the
//! manifest's `md5Checksum` is the MD5 of the object as stored), decompresses every gzip member in turn,
//! and passes each line's record to the caller before reading the next.
//!
//! **A file may only be marked done after [`read_data_file`] returned `Ok`.** The MD5 and the line count
//! can only be checked at the end, so records of a file that later fails verification have already been
//! handed over; the caller must then read the whole file again (projection writes are idempotent, so the
//! records seen twice do no harm). Likewise, when the handler fails, reading stops at that line and the
//! file is not verified.

use std::io::{self, BufRead, BufReader, Read};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use flate2::bufread::MultiGzDecoder;
use md5::{Digest, Md5};
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error as _};
use thiserror::Error;

use super::{DataFileEntry, ExportKind};

/// Buffer size for the compressed and the decompressed side (S3 bodies arrive in chunks of this order).
const BUFFER_BYTES: usize = 64 * 1024;

/// One line of a data file.
#[derive(Clone, Debug, PartialEq)]
pub enum ExportRecord<I> {
    /// A full export line `{"Item":{…}}`: the item as it was at the export time.
    Full(I),
    /// An incremental export line: the final change of one item in the export window.
    ///
    /// Insert: `new_image` only. Update: both (`new_image` only with the `NEW_IMAGE` view). Delete:
    /// `old_image` only (neither with the `NEW_IMAGE` view).
    Incremental {
        /// The item's primary key attributes (`Keys`).
        keys: I,
        /// The item at the end of the window (`NewImage`); `None` when it was deleted.
        new_image: Option<I>,
        /// The item just before the window (`OldImage`); `None` when it was created, or with `NEW_IMAGE`.
        old_image: Option<I>,
        /// `Metadata.WriteTimestampMicros`: when the last write happened, in epoch microseconds.
        write_timestamp_micros: Option<u64>,
    },
}

/// What reading one data file saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileStats {
    /// Records (lines) handed to the caller.
    pub records: u64,
    /// Bytes of the object as stored (gzip).
    pub compressed_bytes: u64,
    /// Bytes after gunzip, line ends included.
    pub uncompressed_bytes: u64,
}

impl std::ops::AddAssign for FileStats {
    fn add_assign(&mut self, other: Self) {
        self.records += other.records;
        self.compressed_bytes += other.compressed_bytes;
        self.uncompressed_bytes += other.uncompressed_bytes;
    }
}

/// Errors reading one data file. Each names the file's key (as written in the manifest) and, where it
/// applies, the 1-based line, and says what to do. `E` is the error of the record handler.
#[derive(Debug, Error)]
pub enum ReadError<E> {
    /// The object's MD5 differs from the manifest's `md5Checksum`.
    #[error(
        "data file {file}: its MD5 is {actual} but the manifest says {expected}; the object is corrupt, \
         truncated or was replaced: read it again, and if it still differs do not trust this export"
    )]
    Md5Mismatch {
        /// Key of the data file.
        file: String,
        /// `md5Checksum` from the manifest (base64).
        expected: String,
        /// base64 of the MD5 of the bytes read.
        actual: String,
    },
    /// The gzip stream is truncated or corrupt.
    #[error("data file {file}: gzip stream is truncated or corrupt at line {line}: {source}; read it again")]
    Gzip {
        /// Key of the data file.
        file: String,
        /// 1-based line being decompressed when it failed.
        line: u64,
        /// What the decompressor reported.
        source: io::Error,
    },
    /// A line is not a record of the export's kind.
    #[error("data file {file}, line {line}: {message}")]
    MalformedLine {
        /// Key of the data file.
        file: String,
        /// 1-based line number.
        line: u64,
        /// What is wrong with the line.
        message: String,
    },
    /// The file has a different number of lines than its manifest entry's `itemCount`.
    #[error(
        "data file {file} has {actual} lines but the manifest says {expected}; \
         the file does not belong to this manifest or is incomplete"
    )]
    ItemCountMismatch {
        /// Key of the data file.
        file: String,
        /// `itemCount` from the manifest.
        expected: u64,
        /// Lines read.
        actual: u64,
    },
    /// Reading the body failed (network, file system).
    #[error("data file {file}: reading the body failed at line {line}: {source}; read the file again")]
    Io {
        /// Key of the data file.
        file: String,
        /// 1-based line being read when it failed.
        line: u64,
        /// The body's I/O error.
        source: io::Error,
    },
    /// The record handler failed; reading stopped at this line.
    #[error("data file {file}, line {line}: handling the record failed: {source}")]
    Callback {
        /// Key of the data file.
        file: String,
        /// 1-based line of the record the handler rejected.
        line: u64,
        /// The handler's error.
        source: E,
    },
}

impl<E> ReadError<E> {
    /// A short, bounded label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Md5Mismatch { .. } => "md5_mismatch",
            Self::Gzip { .. } => "gzip",
            Self::MalformedLine { .. } => "malformed_line",
            Self::ItemCountMismatch { .. } => "item_count_mismatch",
            Self::Io { .. } => "io",
            Self::Callback { .. } => "callback",
        }
    }

    /// Key of the data file the error is about.
    pub fn file(&self) -> &str {
        match self {
            Self::Md5Mismatch { file, .. }
            | Self::Gzip { file, .. }
            | Self::MalformedLine { file, .. }
            | Self::ItemCountMismatch { file, .. }
            | Self::Io { file, .. }
            | Self::Callback { file, .. } => file,
        }
    }
}

/// Reads one data file from `body` (the object's bytes as stored), handing each record to `on_record` in
/// file order, and verifies the file at the end: MD5 against `file.md5_checksum`, lines against
/// `file.item_count`.
///
/// `kind` comes from the summary ([`ManifestSummary::export_type`](super::ManifestSummary::export_type)).
/// A 0-byte body and an empty gzip stream are both an empty file. The body may hold several gzip members.
/// When `on_record` fails, reading stops at once with [`ReadError::Callback`]. Only mark the file done on
/// `Ok` (see the module docs).
pub fn read_data_file<R, I, E, F>(
    file: &DataFileEntry,
    kind: ExportKind,
    body: R,
    mut on_record: F,
) -> Result<FileStats, ReadError<E>>
where
    R: Read,
    I: DeserializeOwned,
    F: FnMut(ExportRecord<I>) -> Result<(), E>,
{
    let key = || file.data_file_s3_key.clone();
    let mut compressed = BufReader::with_capacity(BUFFER_BYTES, HashingReader::new(body));
    let mut stats = FileStats::default();

    // A 0-byte object is an empty partition too; the gzip decoder would call it a truncated stream.
    let at_eof = compressed
        .fill_buf()
        .map_err(|source| ReadError::Io { file: key(), line: 1, source })?
        .is_empty();
    if !at_eof {
        let mut lines = BufReader::with_capacity(BUFFER_BYTES, MultiGzDecoder::new(compressed));
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let line = stats.records + 1;
            let read = match lines.read_until(b'\n', &mut buf) {
                Ok(read) => read,
                Err(source) if lines.get_ref().get_ref().get_ref().failed => {
                    return Err(ReadError::Io { file: key(), line, source });
                }
                Err(source) => {
                    return Err(ReadError::Gzip { file: key(), line, source });
                }
            };
            if read == 0 {
                break;
            }
            stats.uncompressed_bytes += read as u64;
            let record = parse_line(kind, &buf).map_err(|message| ReadError::MalformedLine {
                file: key(),
                line,
                message,
            })?;
            stats.records = line;
            on_record(record).map_err(|source| ReadError::Callback { file: key(), line, source })?;
        }
        compressed = lines.into_inner().into_inner();
    }
    // The decoder stops at the end of the last gzip member; hash whatever follows too.
    io::copy(&mut compressed, &mut io::sink()).map_err(|source| ReadError::Io {
        file: key(),
        line: stats.records + 1,
        source,
    })?;

    let hashed = compressed.into_inner();
    stats.compressed_bytes = hashed.bytes;
    let digest = hashed.md5.finalize();
    let expected = BASE64.decode(file.md5_checksum.trim()).ok();
    if expected.as_deref() != Some(digest.as_slice()) {
        return Err(ReadError::Md5Mismatch {
            file: key(),
            expected: file.md5_checksum.clone(),
            actual: BASE64.encode(digest),
        });
    }
    if stats.records != file.item_count {
        return Err(ReadError::ItemCountMismatch {
            file: key(),
            expected: file.item_count,
            actual: stats.records,
        });
    }
    tracing::debug!(
        file = %file.data_file_s3_key,
        records = stats.records,
        compressed_bytes = stats.compressed_bytes,
        uncompressed_bytes = stats.uncompressed_bytes,
        "export data file read and verified"
    );
    Ok(stats)
}

/// Parses one line (its `\n` included) of an export of `kind`.
fn parse_line<I: DeserializeOwned>(kind: ExportKind, line: &[u8]) -> Result<ExportRecord<I>, String> {
    if line.trim_ascii().is_empty() {
        return Err("empty line; every line of a data file is one record".to_owned());
    }
    match kind {
        ExportKind::Full => serde_json::from_slice::<FullLine<I>>(line)
            .map(|full| ExportRecord::Full(full.item))
            .map_err(|e| format!("not a full export line {{\"Item\":{{…}}}}: {e}")),
        ExportKind::Incremental => serde_json::from_slice::<IncrementalLine<I>>(line)
            .map(|inc| ExportRecord::Incremental {
                keys: inc.keys,
                new_image: inc.new_image,
                old_image: inc.old_image,
                write_timestamp_micros: inc.metadata.and_then(|m| m.write_timestamp_micros),
            })
            .map_err(|e| format!("not an incremental export line {{\"Keys\":{{…}},…}}: {e}")),
    }
}

#[derive(Deserialize)]
struct FullLine<I> {
    #[serde(rename = "Item")]
    item: I,
}

#[derive(Deserialize)]
struct IncrementalLine<I> {
    #[serde(rename = "Metadata")]
    metadata: Option<Metadata>,
    #[serde(rename = "Keys")]
    keys: I,
    #[serde(rename = "NewImage")]
    new_image: Option<I>,
    #[serde(rename = "OldImage")]
    old_image: Option<I>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(rename = "WriteTimestampMicros", default, deserialize_with = "micros")]
    write_timestamp_micros: Option<u64>,
}

/// `WriteTimestampMicros` as `{"N":"…"}` (what the fixtures and public parsers use), `"…"` or a number: the
/// encoding is not documented.
fn micros<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Micros {
        Number(u64),
        Text(String),
        Dynamo {
            #[serde(rename = "N")]
            n: String,
        },
    }
    let text = match Option::<Micros>::deserialize(deserializer)? {
        None => return Ok(None),
        Some(Micros::Number(n)) => return Ok(Some(n)),
        Some(Micros::Text(text) | Micros::Dynamo { n: text }) => text,
    };
    text.trim().parse().map(Some).map_err(|_| {
        D::Error::custom(format!(
            "WriteTimestampMicros {text:?} is not a whole number of microseconds"
        ))
    })
}

/// A tee: hashes and counts the compressed bytes as the decoder pulls them, and remembers whether the
/// body itself failed (so a body error is not reported as a gzip error).
struct HashingReader<R> {
    inner: R,
    md5: Md5,
    bytes: u64,
    failed: bool,
}

impl<R> HashingReader<R> {
    fn new(inner: R) -> Self {
        Self { inner, md5: Md5::new(), bytes: 0, failed: false }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(read) => {
                let data = buf.get(..read).unwrap_or_default();
                self.md5.update(data);
                self.bytes += data.len() as u64;
                Ok(read)
            }
            Err(e) => {
                self.failed |= e.kind() != io::ErrorKind::Interrupted;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests;
