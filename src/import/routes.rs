//! The routes an import writes: one per distinct destination, named after it.
//!
//! Names come from the next hop (`smtp:[mx.legacy.example.com]` is
//! `mx-legacy-example-com`, a non-default port is appended), the LMTP socket
//! (`lmtp:unix:/var/run/dovecot/lmtp` is `dovecot-lmtp`) or the status of a reply
//! (`reject-5-1-1`); a name already taken gets `-2`, `-3`, ... The route
//! [`NOT_IMPORTED`] defers what the import could not carry over.

use hashbrown::{HashMap, HashSet};

use crate::routing::route::{LMTP_PORT, NextHop, RouteKind, SMTP_PORT};

/// The route for recipients whose Postfix entry was not carried over: a 4xx at RCPT time,
/// so senders retry and nothing is delivered to a place nobody chose.
pub const NOT_IMPORTED: &str = "not-imported";

/// The reply of the [`NOT_IMPORTED`] route (it tells the sender nothing about the setup).
pub(crate) const NOT_IMPORTED_REPLY: &str = "451 4.3.0 Temporary routing problem, try again later";

/// One route to write.
#[derive(Debug, Clone)]
pub(crate) struct PlannedRoute {
    pub(crate) name: String,
    /// None for [`NOT_IMPORTED`].
    pub(crate) kind: Option<RouteKind>,
    /// The source line that first used it, if any.
    pub(crate) first_line: Option<u32>,
}

/// The routes of an import, deduplicated by what they do.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    pub(crate) list: Vec<PlannedRoute>,
    by_kind: HashMap<String, usize>,
    names: HashSet<String>,
    placeholder: Option<usize>,
}

impl Routes {
    pub(crate) fn new() -> Routes {
        let mut r = Routes::default();
        r.names.insert(NOT_IMPORTED.to_string());
        r
    }

    /// The route that does `kind`, added on first use.
    pub(crate) fn intern(&mut self, kind: &RouteKind, line: Option<u32>) -> usize {
        let key = kind.to_string();
        if let Some(&i) = self.by_kind.get(&key) {
            return i;
        }
        let mut base = base_name(kind);
        // A name YAML would read as something else (`y` is true, `1e3` a number).
        if super::emit::scalar(&base) != base {
            base = format!("route-{base}");
        }
        let mut name = base.clone();
        let mut n = 2;
        while self.names.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        self.names.insert(name.clone());
        let i = self.list.len();
        self.list.push(PlannedRoute {
            name,
            kind: Some(kind.clone()),
            first_line: line,
        });
        self.by_kind.insert(key, i);
        i
    }

    /// The [`NOT_IMPORTED`] route, added on first use.
    pub(crate) fn placeholder(&mut self) -> usize {
        if let Some(i) = self.placeholder {
            return i;
        }
        let i = self.list.len();
        self.list.push(PlannedRoute {
            name: NOT_IMPORTED.to_string(),
            kind: None,
            first_line: None,
        });
        self.placeholder = Some(i);
        i
    }

    pub(crate) fn name(&self, i: usize) -> &str {
        self.list.get(i).map_or(NOT_IMPORTED, |r| r.name.as_str())
    }
}

fn base_name(kind: &RouteKind) -> String {
    let with_port = |host: &str, port: u16, default: u16| {
        if port == default {
            slug(host)
        } else {
            format!("{}-{port}", slug(host))
        }
    };
    match kind {
        RouteKind::Smtp { next_hop, .. } => match next_hop {
            NextHop::Direct { host, port } | NextHop::Mx { domain: host, port } => {
                with_port(host, *port, SMTP_PORT)
            }
            NextHop::RecipientDomain { .. } => "recipient-domain-mx".to_string(),
            NextHop::Unix { path } => unix_name(path),
        },
        RouteKind::Lmtp { next_hop, .. } => match next_hop {
            NextHop::Direct { host, port } | NextHop::Mx { domain: host, port } => {
                format!("lmtp-{}", with_port(host, *port, LMTP_PORT))
            }
            NextHop::RecipientDomain { .. } => "lmtp-recipient-domain".to_string(),
            NextHop::Unix { path } => unix_name(path),
        },
        RouteKind::Reject(reply) => format!("reject-{}", slug(&reply.status)),
        RouteKind::Defer(reply) => format!("defer-{}", slug(&reply.status)),
        RouteKind::Maildir { .. } => "maildir".to_string(),
    }
}

/// `/var/run/dovecot/lmtp` → `dovecot-lmtp`; `/private/lmtp-cyrus` → `lmtp-cyrus`.
fn unix_name(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let name = match parts.as_slice() {
        [.., parent, "lmtp"] => format!("{parent}-lmtp"),
        [.., last] => last.to_string(),
        [] => String::new(),
    };
    let name = slug(&name);
    if name.contains("lmtp") {
        name
    } else {
        format!("lmtp-{name}")
    }
}

/// Letters and digits kept (lower case), everything else one `-`; at most 48 characters.
fn slug(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
        if out.len() >= 48 {
            break;
        }
    }
    let out = out.trim_matches('-');
    if out.is_empty() {
        "route".to_string()
    } else {
        out.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::route::Route;

    fn kind(spec: &str) -> RouteKind {
        Route::parse_transport("x", spec).unwrap().kind().clone()
    }

    #[test]
    fn names_come_from_the_destination_and_are_unique() {
        let mut r = Routes::new();
        let names: Vec<String> = [
            "smtp:[mx.legacy.example.com]",
            "smtp:[mx.legacy.example.com]:2525",
            "smtp:mx.legacy.example.com",
            "smtp:[mx.legacy.example.com]:25",
            "lmtp:unix:/var/run/dovecot/lmtp",
            "lmtp:[127.0.0.1]:24",
            "error:5.1.1 gone",
            "error:5.1.1 closed",
            "retry:4.2.1 moving",
            "smtp:",
            "smtp:[2001:db8::1]",
        ]
        .iter()
        .map(|s| {
            let i = r.intern(&kind(s), None);
            r.name(i).to_string()
        })
        .collect();
        assert_eq!(
            names,
            vec![
                "mx-legacy-example-com",
                "mx-legacy-example-com-2525",
                "mx-legacy-example-com-2",
                "mx-legacy-example-com",
                "dovecot-lmtp",
                "lmtp-127-0-0-1",
                "reject-5-1-1",
                "reject-5-1-1-2",
                "defer-4-2-1",
                "recipient-domain-mx",
                "route-2001-db8-1",
            ]
        );
        let yes = r.intern(&kind("smtp:y"), None);
        assert_eq!(r.name(yes), "route-y");
        let p = r.placeholder();
        assert_eq!(r.name(p), NOT_IMPORTED);
        assert_eq!(r.placeholder(), p);
    }
}
