//! What went wrong on the wire, in words an administrator knows from Postfix logs
//! ("lost connection with X while sending RCPT TO").

use std::fmt;
use std::io;

use super::stream::WireError;

/// Where in the conversation a failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Greeting,
    Ehlo,
    Helo,
    Lhlo,
    StartTls,
    Reset,
    Mail,
    Rcpt,
    Data,
    Body,
    EndOfData,
}

impl Stage {
    /// A short name for log fields.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Stage::Greeting => "greeting",
            Stage::Ehlo => "EHLO",
            Stage::Helo => "HELO",
            Stage::Lhlo => "LHLO",
            Stage::StartTls => "STARTTLS",
            Stage::Reset => "RSET",
            Stage::Mail => "MAIL",
            Stage::Rcpt => "RCPT",
            Stage::Data => "DATA",
            Stage::Body => "message",
            Stage::EndOfData => "end of data",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Greeting => "receiving the initial server greeting",
            Stage::Ehlo => "performing the EHLO handshake",
            Stage::Helo => "performing the HELO handshake",
            Stage::Lhlo => "performing the LHLO handshake",
            Stage::StartTls => "sending STARTTLS",
            Stage::Reset => "sending RSET",
            Stage::Mail => "sending MAIL FROM",
            Stage::Rcpt => "sending RCPT TO",
            Stage::Data => "sending DATA",
            Stage::Body => "sending message body",
            Stage::EndOfData => "sending end of data -- message may be sent more than once",
        })
    }
}

/// The status code and one-line detail for a wire failure.
pub(crate) fn describe(remote: &str, error: &WireError, stage: Stage) -> (&'static str, String) {
    match error {
        WireError::Closed => (
            "4.4.2",
            format!("lost connection with {remote} while {stage}"),
        ),
        WireError::Io(e) => (
            "4.4.2",
            format!(
                "lost connection with {remote} while {stage}: {}",
                io_text(e)
            ),
        ),
        WireError::Timeout => (
            "4.4.2",
            format!("conversation with {remote} timed out while {stage}"),
        ),
        WireError::Reply(e) => (
            "4.5.0",
            format!("malformed reply from {remote} while {stage}: {e}"),
        ),
    }
}

/// An I/O error without the "(os error N)" suffix: `Connection refused`.
pub(crate) fn io_text(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(at) => text.get(..at).unwrap_or(&text).to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postfix_like_wording() {
        let e = io::Error::from_raw_os_error(111);
        assert_eq!(io_text(&e), "Connection refused");
        let (status, detail) = describe("mx[192.0.2.1]:25", &WireError::Closed, Stage::Rcpt);
        assert_eq!(status, "4.4.2");
        assert_eq!(
            detail,
            "lost connection with mx[192.0.2.1]:25 while sending RCPT TO"
        );
        let (_, detail) = describe("mx[192.0.2.1]:25", &WireError::Timeout, Stage::Greeting);
        assert_eq!(
            detail,
            "conversation with mx[192.0.2.1]:25 timed out while receiving the initial server greeting"
        );
    }
}
