//! Read-only access: list and read messages from the segment files, from the gateway or
//! from another process while the gateway runs (`splitmx queue list/show`).
//!
//! A reader opens segments read-only and takes no lock. It may see records the writer
//! has written but not yet fsynced (not yet acknowledged), and stops at a record being
//! written (its checksum does not match yet). If the writer deletes a segment during a
//! scan, the scan is repeated, so a message is never reported live only because the
//! segment holding its final state vanished in between.

use std::fs::File;
use std::io;
use std::path::Path;

use super::envelope::decode_message;
use super::error::SpoolError;
use super::id::QueueId;
use super::message::{MessageInfo, NewMessage, StoredMessage};
use super::record::{self, Kind, Read};
use super::recover::{Recovered, recover};
use super::segment;

/// How many times a scan is repeated when segments are deleted while it runs.
const SCAN_ATTEMPTS: usize = 5;

/// The live (not final) messages in the spool under `dir`, oldest first. Usable while a
/// gateway has the spool open.
pub fn scan(dir: &Path) -> Result<Vec<MessageInfo>, SpoolError> {
    Ok(stable_recover(dir)?.index.live())
}

/// Reads message `id` (envelope, body and state) from the spool under `dir`. Usable while
/// a gateway has the spool open. Final messages whose segment is not reclaimed yet are
/// found too.
pub fn read_message(dir: &Path, id: &QueueId) -> Result<StoredMessage, SpoolError> {
    let recovered = stable_recover(dir)?;
    let entry = recovered
        .index
        .get(id)
        .ok_or_else(|| SpoolError::NotFound {
            id: *id,
            dir: dir.to_path_buf(),
        })?;
    let envelope = read_record(dir, &entry.info.segment, entry.info.offset, id)?;
    Ok(StoredMessage {
        info: entry.info.clone(),
        envelope,
    })
}

/// Recovery repeated until no segment it read was deleted meanwhile.
fn stable_recover(dir: &Path) -> Result<Recovered, SpoolError> {
    let segments = segment::segments_dir(dir);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let before = segment::list(&segments)?;
        let recovered = recover(dir)?;
        let after = segment::list(&segments)?;
        if attempt >= SCAN_ATTEMPTS || before.iter().all(|s| after.contains(s)) {
            return Ok(recovered);
        }
        tracing::debug!(dir = %dir.display(), attempt, "segments deleted during scan; scanning again");
    }
}

/// Reads and decodes the message record of `id` at `offset` of segment `path`.
pub(crate) fn read_record(
    dir: &Path,
    path: &Path,
    offset: u64,
    id: &QueueId,
) -> Result<NewMessage, SpoolError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SpoolError::NotFound {
                id: *id,
                dir: dir.to_path_buf(),
            });
        }
        Err(e) => return Err(SpoolError::io("open", path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| SpoolError::io("stat", path, e))?
        .len();
    let corrupt = |reason: String| SpoolError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let mut payload = Vec::new();
    match record::read_at(&file, offset, len, &mut payload)
        .map_err(|e| SpoolError::io("read", path, e))?
    {
        Read::Record(h) if h.kind == Kind::Message => {}
        Read::Record(_) => return Err(corrupt("not a message record".into())),
        Read::End => return Err(corrupt("no record here".into())),
        Read::Bad(reason) => return Err(corrupt(reason)),
    }
    let message = decode_message(payload).map_err(corrupt)?;
    if message.id != *id {
        return Err(corrupt(format!(
            "record is message {}, not {id}",
            message.id
        )));
    }
    Ok(message)
}
