//! The deployment package of a custom-runtime function: a zip archive holding one executable file,
//! `bootstrap`, compressed with DEFLATE (method 8) by flate2; the zip container around it (three fixed
//! headers) is written here, so the archive stays deterministic without a zip crate. A release build of
//! the operator is about 56 MB, over Lambda's 50 MB for a package uploaded with the call; deflated it is
//! well under (tests/image.rs checks the release binary's package).
//!
//! Guarantees: the output depends on the binary alone (fixed DOS date and time, fixed attributes), so the
//! same binary always gives the same `CodeSha256` and an unchanged function is never re-uploaded. The
//! file is marked as a Unix regular file with mode 0755 (external attributes `0o100755 << 16`, "made by"
//! Unix), which Lambda needs to execute it. Limits: one file below 4 GiB (no Zip64); Lambda's own limit
//! for an uploaded package is 50 MB.

/// The name Lambda's custom runtimes execute.
pub const BOOTSTRAP: &str = "bootstrap";

const LOCAL_FILE_HEADER: u32 = 0x0403_4b50;
const CENTRAL_DIRECTORY_HEADER: u32 = 0x0201_4b50;
const END_OF_CENTRAL_DIRECTORY: u32 = 0x0605_4b50;
/// 1980-01-01 00:00:00, the earliest DOS date: fixed so the archive is deterministic.
const DOS_TIME: u16 = 0;
const DOS_DATE: u16 = (1 << 5) | 1;
/// Version 2.0 (what a deflated file needs), made by Unix (3) so the external attributes are a mode.
const VERSION_NEEDED: u16 = 20;
const VERSION_MADE_BY: u16 = (3 << 8) | 20;
/// Compression method 8: DEFLATE (APPNOTE.TXT 4.4.5).
const DEFLATED: u16 = 8;
/// A regular file, rwxr-xr-x.
pub const UNIX_MODE: u32 = 0o100_755;

/// A zip archive holding `binary` as the executable file `bootstrap`. A binary of 4 GiB or more does not
/// fit a zip without Zip64 (its size is then wrong in the headers); Lambda rejects such a package anyway.
pub fn bootstrap_zip(binary: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let name = BOOTSTRAP.as_bytes();
    let crc = crc32(binary);
    let size = binary.len() as u32;
    let mut encoder = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(binary.len() / 2),
        flate2::Compression::default(),
    );
    // Writing to a Vec cannot fail.
    encoder.write_all(binary).expect("deflate into memory");
    let deflated = encoder.finish().expect("deflate into memory");
    let compressed = deflated.len() as u32;
    let name_len = name.len() as u16;
    let mut out = Vec::with_capacity(deflated.len() + 128);

    // Local file header.
    let entry = Entry { crc, compressed, size, name_len };
    put32(&mut out, LOCAL_FILE_HEADER);
    entry.put(&mut out);
    out.extend_from_slice(name);
    out.extend_from_slice(&deflated);

    // Central directory, one entry.
    let central_offset = out.len() as u32;
    put32(&mut out, CENTRAL_DIRECTORY_HEADER);
    put16(&mut out, VERSION_MADE_BY);
    entry.put(&mut out);
    put16(&mut out, 0); // comment length
    put16(&mut out, 0); // disk number start
    put16(&mut out, 0); // internal attributes
    put32(&mut out, UNIX_MODE << 16); // external attributes
    put32(&mut out, 0); // offset of the local header
    out.extend_from_slice(name);
    let central_size = out.len() as u32 - central_offset;

    // End of central directory.
    put32(&mut out, END_OF_CENTRAL_DIRECTORY);
    put16(&mut out, 0); // this disk
    put16(&mut out, 0); // disk with the central directory
    put16(&mut out, 1); // entries on this disk
    put16(&mut out, 1); // entries in all
    put32(&mut out, central_size);
    put32(&mut out, central_offset);
    put16(&mut out, 0); // comment length
    out
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// The CRC-32 table of the reflected polynomial 0xEDB88320, computed at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 (ISO-HDLC, as zip uses it).
pub fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |c, &b| {
        CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8)
    })
}

/// The fields the local file header and the central directory header share, from "version needed to
/// extract" to "extra field length" (APPNOTE.TXT 4.3.7 and 4.3.12).
struct Entry {
    crc: u32,
    compressed: u32,
    size: u32,
    name_len: u16,
}

impl Entry {
    fn put(&self, out: &mut Vec<u8>) {
        put16(out, VERSION_NEEDED);
        put16(out, 0); // flags
        put16(out, DEFLATED);
        put16(out, DOS_TIME);
        put16(out, DOS_DATE);
        put32(out, self.crc);
        put32(out, self.compressed);
        put32(out, self.size); // uncompressed
        put16(out, self.name_len);
        put16(out, 0); // extra field length
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    #[test]
    fn crc32_matches_the_check_values() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"The quick brown fox jumps over the lazy dog"), 0x414F_A339);
    }

    /// Reads the archive back as an unzip tool would: from the end of central directory.
    #[test]
    fn the_archive_holds_one_executable_bootstrap() {
        let binary: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let zip = bootstrap_zip(&binary);

        let eocd = zip.len() - 22;
        assert_eq!(u32_at(&zip, eocd), END_OF_CENTRAL_DIRECTORY);
        assert_eq!((u16_at(&zip, eocd + 8), u16_at(&zip, eocd + 10)), (1, 1));
        let central_size = u32_at(&zip, eocd + 12) as usize;
        let central = u32_at(&zip, eocd + 16) as usize;
        assert_eq!(central + central_size, eocd);
        assert_eq!(u16_at(&zip, eocd + 20), 0, "no comment");

        assert_eq!(u32_at(&zip, central), CENTRAL_DIRECTORY_HEADER);
        assert_eq!(u16_at(&zip, central + 4) >> 8, 3, "made by Unix");
        assert_eq!(u16_at(&zip, central + 10), DEFLATED, "deflated");
        let crc = u32_at(&zip, central + 16);
        assert_eq!(crc, crc32(&binary));
        let compressed = u32_at(&zip, central + 20) as usize;
        assert!(compressed < binary.len(), "{compressed} bytes deflated");
        assert_eq!(u32_at(&zip, central + 24) as usize, binary.len());
        let name_len = u16_at(&zip, central + 28) as usize;
        assert_eq!(
            u32_at(&zip, central + 38) >> 16,
            0o100_755,
            "regular file, rwxr-xr-x"
        );
        assert_eq!(&zip[central + 46..central + 46 + name_len], b"bootstrap");
        let local = u32_at(&zip, central + 42) as usize;

        assert_eq!(u32_at(&zip, local), LOCAL_FILE_HEADER);
        assert_eq!(u16_at(&zip, local + 8), DEFLATED, "deflated");
        assert_eq!(u32_at(&zip, local + 14), crc);
        assert_eq!(u32_at(&zip, local + 18) as usize, compressed);
        assert_eq!(u32_at(&zip, local + 22) as usize, binary.len());
        let (name_len, extra_len) = (
            u16_at(&zip, local + 26) as usize,
            u16_at(&zip, local + 28) as usize,
        );
        assert_eq!(&zip[local + 30..local + 30 + name_len], b"bootstrap");
        let data = local + 30 + name_len + extra_len;
        assert_eq!(data + compressed, central);
        let mut inflated = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::DeflateDecoder::new(&zip[data..central]),
            &mut inflated,
        )
        .unwrap();
        assert_eq!(inflated, binary, "the archive inflates to the binary");
    }

    #[test]
    fn the_same_binary_gives_the_same_archive() {
        assert_eq!(bootstrap_zip(b"\x7fELF..."), bootstrap_zip(b"\x7fELF..."));
        assert_ne!(bootstrap_zip(b"\x7fELF..."), bootstrap_zip(b"\x7fELF.!."));
        // The headers around the deflated bytes: local (30 + name), central (46 + name), end (22).
        let empty = bootstrap_zip(b"");
        assert_eq!(empty.len(), 30 + 9 + 46 + 9 + 22 + u32_at(&empty, 18) as usize);
    }
}
