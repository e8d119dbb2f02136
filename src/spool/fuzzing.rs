//! For the fuzz target `spool_segment` only; not a stable interface.
//!
//! Random bytes rarely get past a record's checksum, so the fuzz target also builds
//! segments whose framing is valid around random payloads: that reaches the envelope and
//! state decoders that recovery runs on every record.

use super::record::{self, Kind};
use super::segment::{self, SegmentHeader};

/// A segment image (header, then one record per payload, chained as the writer chains
/// them) for segment number 1. A payload whose `bool` is true is a message record, else a
/// state record.
pub fn segment_image(records: &[(bool, &[u8])]) -> Vec<u8> {
    let nonce = 0x5eed_5eed;
    let mut out = segment::encode_header(SegmentHeader { number: 1, nonce }).to_vec();
    let mut prev = nonce;
    for &(message, payload) in records {
        let kind = if message { Kind::Message } else { Kind::State };
        match record::encode(kind, prev, &[payload], &mut out) {
            Some(crc) => prev = crc,
            None => break,
        }
    }
    out
}
