//! Why a next hop has no address to deliver to, as a delivery status.

use crate::delivery::{RcptResult, ResultKind};

/// A next hop that could not be turned into addresses: a DNS answer that says the
/// destination does not exist or takes no mail (permanent), or a DNS failure (temporary).
///
/// | status   | temporary | when                                                          |
/// |----------|-----------|---------------------------------------------------------------|
/// | `5.1.2`  | no        | NXDOMAIN for the domain or host, or a malformed domain name    |
/// | `5.1.10` | no        | null MX (RFC 7505): the domain accepts no mail                 |
/// | `5.4.4`  | no        | the host (or the implicit MX) exists but has no A/AAAA record  |
/// | `4.4.3`  | yes       | SERVFAIL, REFUSED, timeout, no reachable name server           |
/// | `4.4.4`  | yes       | MX records exist but none of their hosts has an address        |
/// | `4.3.5`  | yes       | the resolver could not be set up (resolv.conf unreadable)      |
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {detail}")]
pub struct MxError {
    /// Whether a later retry may succeed (defer) or not (bounce).
    pub temporary: bool,
    /// The enhanced status code (RFC 3463), e.g. `4.4.3`, `5.1.2`, `5.1.10`.
    pub status: String,
    /// One line saying what was looked up and what the answer was.
    pub detail: String,
}

impl MxError {
    pub(super) fn temporary(status: &str, detail: impl Into<String>) -> MxError {
        MxError {
            temporary: true,
            status: status.to_string(),
            detail: detail.into(),
        }
    }

    pub(super) fn permanent(status: &str, detail: impl Into<String>) -> MxError {
        MxError {
            temporary: false,
            status: status.to_string(),
            detail: detail.into(),
        }
    }

    /// The recipient's result: deferred when temporary, bounced otherwise; no remote host
    /// replied.
    pub fn result(&self) -> RcptResult {
        let kind = if self.temporary {
            ResultKind::Deferred
        } else {
            ResultKind::Bounced
        };
        RcptResult::local(kind, &self.status, self.detail.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_errors_defer_and_permanent_ones_bounce() {
        let t = MxError::temporary("4.4.3", "x").result();
        assert_eq!((t.kind, t.status.as_str()), (ResultKind::Deferred, "4.4.3"));
        let p = MxError::permanent("5.1.10", "y").result();
        assert_eq!((p.kind, p.status.as_str()), (ResultKind::Bounced, "5.1.10"));
        assert_eq!(p.remote, None);
        assert!(!p.remote_reply);
    }
}
