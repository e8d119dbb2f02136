//! The delivery client's reply parser: any bytes from a peer must give replies or an
//! error, the same however they are split, without panicking or exceeding the line and
//! lines-per-reply limits. The dot-stuffer rides along: splitting the message anywhere
//! must not change what goes on the wire.
#![no_main]
use libfuzzer_sys::fuzz_target;
use splitmx::delivery::client::{DotStuffer, MAX_LINE, MAX_LINES, ReplyDecoder};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map(|&b| b as usize % (data.len() + 1)).unwrap_or(0);
    let whole = decode(&[data]);
    let parts = decode(&[&data[..split], &data[split..]]);
    assert_eq!(whole, parts);

    assert_eq!(stuff(&[data]), stuff(&[&data[..split], &data[split..]]));
});

/// Replies as (code, status, detail) until the first error, which ends the list.
fn decode(chunks: &[&[u8]]) -> Vec<Result<(u16, String, String), String>> {
    let mut d = ReplyDecoder::new();
    let mut out = Vec::new();
    for chunk in chunks {
        d.buffer().extend_from_slice(chunk);
        loop {
            match d.next_reply() {
                Ok(Some(r)) => {
                    assert!(r.texts().count() <= MAX_LINES);
                    // Invalid UTF-8 becomes U+FFFD: at most three bytes per byte received.
                    assert!(r.texts().all(|t| t.len() < 3 * MAX_LINE));
                    assert!((200..600).contains(&r.code()));
                    let status = r.status();
                    assert!(matches!(status.as_bytes().first(), Some(b'2' | b'4' | b'5')));
                    out.push(Ok((r.code(), status, r.detail())));
                }
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }
    out
}

fn stuff(chunks: &[&[u8]]) -> Vec<u8> {
    let mut s = DotStuffer::new();
    let mut out = Vec::new();
    for chunk in chunks {
        for piece in s.pieces(chunk) {
            out.extend_from_slice(piece);
        }
    }
    out.extend_from_slice(s.terminator());
    out
}
