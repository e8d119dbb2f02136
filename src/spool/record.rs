//! Record framing: how one message or state change sits in a segment, and how a reader
//! tells an intact record from a torn or stale one.
//!
//! A record is a 20-byte header followed by the payload:
//!
//! | bytes  | field                                                            |
//! |--------|------------------------------------------------------------------|
//! | 0..4   | magic `SMXR`                                                     |
//! | 4      | format version (1)                                               |
//! | 5      | kind: 1 message, 2 state change                                  |
//! | 6..8   | reserved, zero                                                   |
//! | 8..12  | payload length, little endian                                    |
//! | 12..16 | chain: checksum of the previous record in the segment (or the segment nonce for the first) |
//! | 16..20 | CRC-32C of bytes 0..16 and the payload                           |
//!
//! A record counts only if its checksum matches and its chain field equals the checksum of
//! the record before it. The checksum catches a record torn by a crash mid-write; the
//! chain catches a whole record left over from an earlier run past the point where this
//! run resumed writing (a batch written but never fsynced whose later pages reached the
//! disk), which would otherwise look intact. Zero bytes where a header should be mean the
//! end of the written part of a preallocated segment.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::crc::Crc32c;

/// The record magic.
const MAGIC: [u8; 4] = *b"SMXR";
/// The record format version written.
const VERSION: u8 = 1;
/// Length of a record header.
pub(crate) const HEADER_LEN: usize = 20;

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A message: envelope and body.
    Message,
    /// The full state of one message after a change.
    State,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Message => 1,
            Kind::State => 2,
        }
    }

    fn from_code(code: u8) -> Option<Kind> {
        match code {
            1 => Some(Kind::Message),
            2 => Some(Kind::State),
            _ => None,
        }
    }
}

/// A decoded record header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    /// What the record holds.
    pub(crate) kind: Kind,
    /// Payload length.
    pub(crate) len: u32,
    /// Checksum of the previous record (or the segment nonce).
    pub(crate) prev: u32,
    /// This record's checksum.
    pub(crate) crc: u32,
}

/// The result of reading the record at some offset.
#[derive(Debug)]
pub(crate) enum Read {
    /// An intact record; the payload is in the caller's buffer.
    Record(Header),
    /// Zeros (or end of file): nothing was written here.
    End,
    /// Something that is not an intact record: a torn write, garbage, damage.
    Bad(String),
}

/// Appends a record of `kind` whose payload is the concatenation of `parts` to `out`,
/// chained to `prev`. Returns the record's checksum, or `None` if the payload is too long
/// for the length field (4 GiB).
pub(crate) fn encode(kind: Kind, prev: u32, parts: &[&[u8]], out: &mut Vec<u8>) -> Option<u32> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(len).ok()?;
    let mut head = [0u8; HEADER_LEN];
    head[..4].copy_from_slice(&MAGIC);
    head[4] = VERSION;
    head[5] = kind.code();
    head[8..12].copy_from_slice(&len.to_le_bytes());
    head[12..16].copy_from_slice(&prev.to_le_bytes());
    let crc = checksum(&head, parts);
    head[16..20].copy_from_slice(&crc.to_le_bytes());
    out.reserve(HEADER_LEN + len as usize);
    out.extend_from_slice(&head);
    for p in parts {
        out.extend_from_slice(p);
    }
    Some(crc)
}

/// The total length of a record with a payload of `payload_len` bytes.
pub(crate) fn record_len(payload_len: usize) -> u64 {
    (HEADER_LEN + payload_len) as u64
}

fn checksum(head: &[u8; HEADER_LEN], parts: &[&[u8]]) -> u32 {
    let mut c = Crc32c::new();
    c.update(&head[..16]);
    for p in parts {
        c.update(p);
    }
    c.finish()
}

/// Reads the record at `offset` of `file` (whose length is `file_len`) into `payload`,
/// checking magic, version, length and checksum (not the chain: the caller knows the
/// previous record). Errors only for I/O; damage is [`Read::Bad`].
pub(crate) fn read_at(
    file: &File,
    offset: u64,
    file_len: u64,
    payload: &mut Vec<u8>,
) -> std::io::Result<Read> {
    let Some(payload_at) = offset.checked_add(HEADER_LEN as u64) else {
        return Ok(Read::End);
    };
    if payload_at > file_len {
        return Ok(Read::End);
    }
    let mut head = [0u8; HEADER_LEN];
    file.read_exact_at(&mut head, offset)?;
    if head == [0u8; HEADER_LEN] {
        return Ok(Read::End);
    }
    if head[..4] != MAGIC {
        return Ok(Read::Bad("no record magic".into()));
    }
    if head[4] != VERSION {
        return Ok(Read::Bad(format!("unknown record version {}", head[4])));
    }
    let Some(kind) = Kind::from_code(head[5]) else {
        return Ok(Read::Bad(format!("unknown record kind {}", head[5])));
    };
    let len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    let prev = u32::from_le_bytes([head[12], head[13], head[14], head[15]]);
    let crc = u32::from_le_bytes([head[16], head[17], head[18], head[19]]);
    if payload_at + u64::from(len) > file_len {
        return Ok(Read::Bad(format!(
            "payload of {len} bytes runs past the end of the file ({file_len} bytes)"
        )));
    }
    payload.clear();
    payload.resize(len as usize, 0);
    file.read_exact_at(payload, payload_at)?;
    if checksum(&head, &[payload]) != crc {
        return Ok(Read::Bad("checksum mismatch".into()));
    }
    Ok(Read::Record(Header {
        kind,
        len,
        prev,
        crc,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        File::create(&path).unwrap().write_all(bytes).unwrap();
        (dir, File::open(&path).unwrap())
    }

    #[test]
    fn round_trip_and_damage() {
        let mut out = Vec::new();
        let crc = encode(Kind::Message, 7, &[b"head\n\n", b"\0body\xff"], &mut out).unwrap();
        out.extend_from_slice(&[0u8; 40]);
        let (_d, f) = file_with(&out);
        let mut buf = Vec::new();
        match read_at(&f, 0, out.len() as u64, &mut buf).unwrap() {
            Read::Record(h) => {
                assert_eq!((h.kind, h.prev, h.crc, h.len), (Kind::Message, 7, crc, 12));
                assert_eq!(buf, b"head\n\n\0body\xff");
            }
            other => panic!("{other:?}"),
        }
        let end = record_len(12);
        assert!(matches!(
            read_at(&f, end, out.len() as u64, &mut buf).unwrap(),
            Read::End
        ));
        // Every single-byte change to the record is caught.
        for i in 0..end as usize {
            let mut bad = out.clone();
            bad[i] ^= 0x10;
            let (_d, f) = file_with(&bad);
            assert!(
                matches!(
                    read_at(&f, 0, bad.len() as u64, &mut buf).unwrap(),
                    Read::Bad(_)
                ),
                "flip at {i} not caught"
            );
        }
        // Truncation anywhere inside the record is caught.
        for cut in 1..end {
            let (_d, f) = file_with(&out[..cut as usize]);
            assert!(!matches!(
                read_at(&f, 0, cut, &mut buf).unwrap(),
                Read::Record(_)
            ));
        }
    }
}
