//! Segment files: naming, the 32-byte segment header, and creating a preallocated
//! segment durably.
//!
//! A segment is `<spool>/segments/NNNNNNNN.seg` (eight decimal digits, in order of
//! creation). It is created as `NNNNNNNN.seg.tmp`, filled with zeros to its full size,
//! fsynced, renamed, and the directory fsynced; so a `.seg` file always has a complete
//! header and a fixed size, and writing records into it later changes no file metadata
//! (each group commit needs only `fdatasync`). The header:
//!
//! | bytes  | field                                        |
//! |--------|----------------------------------------------|
//! | 0..16  | magic `SPLITMX-SEGMENT\n`                    |
//! | 16..20 | format version (1), little endian            |
//! | 20..24 | segment number                               |
//! | 24..28 | nonce: random, chains the first record       |
//! | 28..32 | CRC-32C of bytes 0..28                       |

use std::collections::hash_map::RandomState;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::crc::crc32c;
use super::error::SpoolError;

/// The directory of segments inside the spool directory.
pub(crate) const SEGMENTS_DIR: &str = "segments";
/// Length of the segment header; the first record starts here.
pub(crate) const HEADER_LEN: u64 = 32;
const MAGIC: &[u8; 16] = b"SPLITMX-SEGMENT\n";
const VERSION: u32 = 1;
/// Suffix of a segment being created.
const TMP_SUFFIX: &str = ".seg.tmp";

/// The segments directory of spool directory `dir`.
pub(crate) fn segments_dir(dir: &Path) -> PathBuf {
    dir.join(SEGMENTS_DIR)
}

/// The file name of segment `number`.
pub(crate) fn file_name(number: u32) -> String {
    format!("{number:08}.seg")
}

/// The segment number of a file name, if it is a segment's.
pub(crate) fn parse_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment files in `segments`, by number. A missing directory has none.
pub(crate) fn list(segments: &Path) -> Result<Vec<(u32, PathBuf)>, SpoolError> {
    let entries = match fs::read_dir(segments) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(SpoolError::io("list", segments, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| SpoolError::io("list", segments, e))?;
        if let Some(n) = entry.file_name().to_str().and_then(parse_name) {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Removes segments left half-created by a crash (`*.seg.tmp`).
pub(crate) fn remove_partial(segments: &Path) -> Result<(), SpoolError> {
    let entries = fs::read_dir(segments).map_err(|e| SpoolError::io("list", segments, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| SpoolError::io("list", segments, e))?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(TMP_SUFFIX))
        {
            let path = entry.path();
            tracing::info!(path = %path.display(), "removing half-created segment");
            fs::remove_file(&path).map_err(|e| SpoolError::io("remove", &path, e))?;
        }
    }
    Ok(())
}

/// A segment's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    /// The number in the header (should match the file name).
    pub(crate) number: u32,
    /// Chain value for the first record.
    pub(crate) nonce: u32,
}

pub(crate) fn encode_header(h: SegmentHeader) -> [u8; HEADER_LEN as usize] {
    let mut b = [0u8; HEADER_LEN as usize];
    b[..16].copy_from_slice(MAGIC);
    b[16..20].copy_from_slice(&VERSION.to_le_bytes());
    b[20..24].copy_from_slice(&h.number.to_le_bytes());
    b[24..28].copy_from_slice(&h.nonce.to_le_bytes());
    let crc = crc32c(&b[..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Reads and checks the header of an open segment: `Ok(Err(reason))` if it is not a
/// valid segment header.
pub(crate) fn read_header(file: &File) -> io::Result<Result<SegmentHeader, String>> {
    let mut b = [0u8; HEADER_LEN as usize];
    match file.read_exact_at(&mut b, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Ok(Err("shorter than a segment header".into()));
        }
        Err(e) => return Err(e),
    }
    if &b[..16] != MAGIC {
        return Ok(Err("no segment magic".into()));
    }
    let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    if word(28) != crc32c(&b[..28]) {
        return Ok(Err("segment header checksum mismatch".into()));
    }
    if word(16) != VERSION {
        return Ok(Err(format!("unknown segment version {}", word(16))));
    }
    Ok(Ok(SegmentHeader {
        number: word(20),
        nonce: word(24),
    }))
}

/// A segment open for appending.
#[derive(Debug)]
pub(crate) struct Writable {
    /// Its number.
    pub(crate) number: u32,
    /// Its path.
    pub(crate) path: PathBuf,
    /// The file, open for reading and writing.
    pub(crate) file: File,
    /// The preallocated size (a record larger than a segment extends it).
    pub(crate) capacity: u64,
    /// Where the next record goes.
    pub(crate) pos: u64,
    /// Chain value for the next record: the checksum of the last one, or the nonce.
    pub(crate) prev: u32,
}

impl Writable {
    /// Opens existing segment `number` at `path` to append at `pos`, chained to `prev`.
    pub(crate) fn resume(
        number: u32,
        path: PathBuf,
        pos: u64,
        prev: u32,
    ) -> Result<Self, SpoolError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| SpoolError::io("open", &path, e))?;
        let capacity = file
            .metadata()
            .map_err(|e| SpoolError::io("stat", &path, e))?
            .len();
        Ok(Writable {
            number,
            path,
            file,
            capacity,
            pos,
            prev,
        })
    }
}

/// Creates segment `number` of `bytes` bytes in `segments`: header, zeros, fsync, rename,
/// directory fsync.
pub(crate) fn create(segments: &Path, number: u32, bytes: u64) -> Result<Writable, SpoolError> {
    let started = Instant::now();
    let path = segments.join(file_name(number));
    let tmp = segments.join(format!("{number:08}{TMP_SUFFIX}"));
    let nonce = random_u32(number);
    let result = (|| {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| SpoolError::io("create", &tmp, e))?;
        file.write_all(&encode_header(SegmentHeader { number, nonce }))
            .map_err(|e| SpoolError::io("write to", &tmp, e))?;
        let zeros = vec![0u8; 1 << 20];
        let mut left = bytes.saturating_sub(HEADER_LEN);
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            file.write_all(&zeros[..n])
                .map_err(|e| SpoolError::io("preallocate", &tmp, e))?;
            left -= n as u64;
        }
        file.sync_all()
            .map_err(|e| SpoolError::io("fsync", &tmp, e))?;
        if fs::symlink_metadata(&path).is_ok() {
            let exists = io::Error::new(io::ErrorKind::AlreadyExists, "segment exists");
            return Err(SpoolError::io("create", &path, exists));
        }
        fs::rename(&tmp, &path).map_err(|e| SpoolError::io("rename", &tmp, e))?;
        sync_dir(segments)?;
        Ok(file)
    })();
    let file = match result {
        Ok(f) => f,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    tracing::info!(
        segment = %path.display(),
        bytes,
        ms = started.elapsed().as_millis() as u64,
        "created spool segment"
    );
    Ok(Writable {
        number,
        path,
        file,
        capacity: bytes.max(HEADER_LEN),
        pos: HEADER_LEN,
        prev: nonce,
    })
}

/// fsyncs a directory, so that files created, renamed or removed in it stay so.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SpoolError::io("fsync directory", dir, e))
}

fn random_u32(seed: u32) -> u32 {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(seed);
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(file_name(1), "00000001.seg");
        assert_eq!(parse_name("00000001.seg"), Some(1));
        for bad in [
            "1.seg",
            "0000001x.seg",
            "00000001.seg.tmp",
            "00000001.sex",
            "000000001.seg",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn create_and_read_header() {
        let dir = tempfile::tempdir().unwrap();
        let w = create(dir.path(), 7, 4096).unwrap();
        assert_eq!((w.number, w.pos, w.capacity), (7, HEADER_LEN, 4096));
        let f = File::open(dir.path().join("00000007.seg")).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 4096);
        let h = read_header(&f).unwrap().unwrap();
        assert_eq!((h.number, h.nonce), (7, w.prev));
        assert!(!dir.path().join("00000007.seg.tmp").exists());
    }
}
