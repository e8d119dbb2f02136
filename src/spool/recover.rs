//! Recovery: scan every segment in order and rebuild the index.
//!
//! Segments are read in number order and each from its header onwards, record by record,
//! until the first place that is not an intact record chained to the one before: zeros
//! (the unwritten, preallocated part), a record torn by a crash mid-write, garbage, or a
//! stale record from an earlier run. Nothing after that point is ever used, and it is
//! never an acknowledged message: a batch is acknowledged only after the fsync that covers
//! it, and the next batch is written only after that fsync, so acknowledged records always
//! form an unbroken prefix of the segment.
//!
//! Recovery only reads, so it serves both the writer opening the spool and a separate
//! process (`splitmx queue`) looking at a running gateway's spool.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::envelope::{Status, decode_head, decode_state};
use super::error::SpoolError;
use super::index::Index;
use super::message::RecipientStatus;
use super::record::{self, Kind, Read};
use super::segment::{self, SegmentHeader};

/// What recovery found in one segment file.
#[derive(Debug, Clone)]
pub(crate) struct SegmentScan {
    /// The segment number (from the file name).
    pub(crate) number: u32,
    /// The file.
    pub(crate) path: PathBuf,
    /// The header, or `None` if the file is not a valid segment (it is then skipped).
    pub(crate) header: Option<SegmentHeader>,
    /// End of the intact records: where the next record would go.
    pub(crate) end: u64,
    /// Checksum of the last intact record (the nonce if there is none).
    pub(crate) last_crc: u32,
    /// Intact records read.
    pub(crate) records: u64,
}

/// The result of recovery.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Every message found, with its latest state.
    pub(crate) index: Index,
    /// The segments, by number.
    pub(crate) segments: Vec<SegmentScan>,
}

/// Scans the segments of spool directory `dir` and rebuilds the index.
pub(crate) fn recover(dir: &Path) -> Result<Recovered, SpoolError> {
    let started = Instant::now();
    let mut out = Recovered::default();
    let mut payload = Vec::new();
    for (number, path) in segment::list(&segment::segments_dir(dir))? {
        if let Some(scan) = scan_segment(number, &path, &mut out.index, &mut payload)? {
            out.segments.push(scan);
        }
    }
    let (messages, segments) = out.index.counts();
    tracing::debug!(
        dir = %dir.display(),
        messages,
        segments,
        ms = started.elapsed().as_millis() as u64,
        "spool scanned"
    );
    Ok(out)
}

/// Scans one segment into `index`; `None` if the file disappeared meanwhile (deleted by
/// the running writer while another process scans).
fn scan_segment(
    number: u32,
    path: &Path,
    index: &mut Index,
    payload: &mut Vec<u8>,
) -> Result<Option<SegmentScan>, SpoolError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SpoolError::io("open", path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| SpoolError::io("stat", path, e))?
        .len();
    let mut scan = SegmentScan {
        number,
        path: path.to_path_buf(),
        header: None,
        end: segment::HEADER_LEN,
        last_crc: 0,
        records: 0,
    };
    let header = match segment::read_header(&file).map_err(|e| SpoolError::io("read", path, e))? {
        Ok(h) => h,
        Err(reason) => {
            tracing::error!(segment = %path.display(), reason, "not a valid spool segment; skipped");
            return Ok(Some(scan));
        }
    };
    if header.number != number {
        tracing::warn!(
            segment = %path.display(),
            header_number = header.number,
            "segment file name and header disagree; using it anyway"
        );
    }
    scan.header = Some(header);
    scan.last_crc = header.nonce;
    index.add_segment(number, path);
    loop {
        let offset = scan.end;
        let read = record::read_at(&file, offset, len, payload)
            .map_err(|e| SpoolError::io("read", path, e))?;
        let h = match read {
            Read::End => break,
            Read::Bad(reason) => {
                tracing::warn!(
                    segment = %path.display(),
                    offset,
                    reason,
                    "end of intact records (torn or unwritten tail); the rest of the segment is ignored"
                );
                break;
            }
            Read::Record(h) if h.prev != scan.last_crc => {
                tracing::warn!(
                    segment = %path.display(),
                    offset,
                    "record not chained to the one before (left from an earlier run); \
                     the rest of the segment is ignored"
                );
                break;
            }
            Read::Record(h) => h,
        };
        let record_len = record::record_len(h.len as usize);
        apply(h.kind, payload, number, offset, path, index);
        scan.last_crc = h.crc;
        scan.end = offset + record_len;
        scan.records += 1;
    }
    Ok(Some(scan))
}

/// Applies one intact record to the index. A record that passed its checksum but cannot
/// be decoded is logged and skipped (the framing is intact, so the scan goes on).
fn apply(kind: Kind, payload: &[u8], segment: u32, offset: u64, path: &Path, index: &mut Index) {
    match kind {
        Kind::Message => match decode_head(payload) {
            Ok((head, _)) => {
                if !index.insert(segment, offset, &head) {
                    tracing::warn!(
                        segment = %path.display(),
                        offset,
                        id = %head.id,
                        "second message record with the same id; keeping the first"
                    );
                }
            }
            Err(reason) => tracing::error!(
                segment = %path.display(),
                offset,
                reason,
                "undecodable message record; skipped"
            ),
        },
        Kind::State => match decode_state(payload) {
            Ok((id, state, changes, changed_at)) => {
                let Some(entry) = index.get(&id) else {
                    // The message's segment was reclaimed: nothing to apply to.
                    return;
                };
                let n = entry.info.recipients.len();
                let mut recipients = vec![RecipientStatus::default(); n];
                for (i, status) in changes {
                    match recipients.get_mut(i) {
                        Some(slot) => *slot = status,
                        None => tracing::warn!(
                            segment = %path.display(),
                            offset,
                            id = %id,
                            index = i,
                            "state for a recipient the message does not have; ignored"
                        ),
                    }
                }
                let status = Status {
                    state,
                    recipients,
                    changed_at,
                };
                index.set_status(&id, segment, status);
            }
            Err(reason) => tracing::error!(
                segment = %path.display(),
                offset,
                reason,
                "undecodable state record; skipped"
            ),
        },
    }
}
