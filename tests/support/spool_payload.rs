//! Messages whose whole content is derived from their queue id, so a test can check that a
//! message read back from the spool is exactly the one committed (shared by
//! `tests/spool.rs` and `examples/spool_writer.rs`).

use sha2::{Digest, Sha256};
use splitmx::spool::{NewMessage, QueueId, SpooledRecipient};

/// 32 bytes derived from the id.
fn seed(id: &QueueId) -> [u8; 32] {
    Sha256::digest(id.as_str().as_bytes()).into()
}

/// A body size between 100 and 4,195 bytes, derived from the id.
pub fn size_for(id: &QueueId) -> usize {
    let s = seed(id);
    100 + (usize::from(s[0]) << 8 | usize::from(s[1])) % 4096
}

/// The body of message `id`: a header block naming the id, then `size` bytes that include
/// NUL, bare CR and LF, and 8-bit bytes.
pub fn body_for(id: &QueueId, size: usize) -> Vec<u8> {
    let s = seed(id);
    let mut body =
        format!("Received: from test by spool id {id}\r\nSubject: {id}\r\n\r\n").into_bytes();
    body.extend((0..size).map(|i| s[i % 32] ^ (i as u8).wrapping_mul(31)));
    body.extend_from_slice(b"\r\n");
    body
}

/// The message committed under `id`, with a body of `size` bytes.
pub fn message_for(id: QueueId, size: usize) -> NewMessage {
    let s = seed(&id);
    let recipients = (0..1 + usize::from(s[2] % 3))
        .map(|i| SpooledRecipient {
            original: format!("user{i}-{}@example.com", id.as_str().to_ascii_lowercase()),
            deliver_to: format!("user{i}@m365.example.com"),
            route: "m365".into(),
            route_kind: "smtp:[example-com.mail.protection.outlook.com]:25".into(),
            provenance: "example.com.yaml:3 default".into(),
            tls: String::new(),
            params: vec![("NOTIFY".into(), "FAILURE".into())],
        })
        .collect();
    NewMessage {
        id,
        received_at: id.created(),
        client: "[192.0.2.1]:52100 (helo.example)".into(),
        sender: format!("sender-{}@example.org", id.as_str().to_ascii_lowercase()),
        recipients,
        table_version: "0123abcd".into(),
        body: body_for(&id, size),
        params: vec![("BODY".into(), "8BITMIME".into())],
    }
}

/// Whether `m` is exactly the message made by [`message_for`] for its id, with a body of
/// `size` bytes ([`size_for`] if `None`).
#[allow(dead_code)] // Not used by the example.
pub fn is_whole(m: &NewMessage, size: Option<usize>) -> bool {
    let size = size.unwrap_or_else(|| size_for(&m.id));
    *m == message_for(m.id, size)
}
