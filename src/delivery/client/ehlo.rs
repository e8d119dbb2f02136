//! The service extensions a peer announces in its EHLO/LHLO reply (RFC 5321 §4.1.1.1),
//! reduced to the ones the client uses.

use super::reply::Reply;

/// What the peer offers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Capabilities {
    /// PIPELINING (RFC 2920).
    pub(crate) pipelining: bool,
    /// SIZE (RFC 1870) was announced; `Some(0)` means no stated limit.
    pub(crate) size: Option<u64>,
    /// 8BITMIME (RFC 6152).
    pub(crate) eight_bit_mime: bool,
    /// SMTPUTF8 (RFC 6531).
    pub(crate) smtputf8: bool,
    /// DSN (RFC 3461).
    pub(crate) dsn: bool,
    /// STARTTLS (RFC 3207).
    pub(crate) starttls: bool,
}

impl Capabilities {
    /// Read the keywords of an EHLO reply; the first line is the greeting, not a keyword.
    /// Unknown keywords and unparsable SIZE values are ignored.
    pub(crate) fn from_ehlo(reply: &Reply) -> Capabilities {
        let mut caps = Capabilities::default();
        for text in reply.texts().skip(1) {
            let mut words = text.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            let is = |name: &str| keyword.eq_ignore_ascii_case(name);
            if is("PIPELINING") {
                caps.pipelining = true;
            } else if is("SIZE") {
                caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0));
            } else if is("8BITMIME") {
                caps.eight_bit_mime = true;
            } else if is("SMTPUTF8") {
                caps.smtputf8 = true;
            } else if is("DSN") {
                caps.dsn = true;
            } else if is("STARTTLS") {
                caps.starttls = true;
            }
        }
        caps
    }

    /// The peer's stated size limit, if any.
    pub(crate) fn size_limit(&self) -> Option<u64> {
        self.size.filter(|&n| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::client::reply::ReplyDecoder;

    fn caps(text: &[u8]) -> Capabilities {
        let mut d = ReplyDecoder::new();
        d.feed(text);
        Capabilities::from_ehlo(&d.next_reply().unwrap().unwrap())
    }

    #[test]
    fn reads_keywords() {
        let c = caps(
            b"250-mx.example.com Hello\r\n250-pipelining\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n250-STARTTLS\r\n250-DSN\r\n250 SMTPUTF8\r\n",
        );
        assert_eq!(
            c,
            Capabilities {
                pipelining: true,
                size: Some(10_240_000),
                eight_bit_mime: true,
                smtputf8: true,
                dsn: true,
                starttls: true,
            }
        );
        assert_eq!(c.size_limit(), Some(10_240_000));
    }

    #[test]
    fn the_greeting_line_is_not_a_keyword() {
        let c = caps(b"250-PIPELINING\r\n250 \r\n");
        assert!(!c.pipelining);
    }

    #[test]
    fn size_without_limit() {
        assert_eq!(caps(b"250-x\r\n250 SIZE\r\n").size_limit(), None);
        assert_eq!(caps(b"250-x\r\n250 SIZE 0\r\n").size, Some(0));
        assert_eq!(caps(b"250-x\r\n250 SIZE lots\r\n").size_limit(), None);
    }
}
