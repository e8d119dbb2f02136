//! From a server's search reply to the routing facts of one entry.
//!
//! Input: the reply (result code and entries) and the configured attribute names.
//! Output: no entry, or one entry's DN, mail host and routing address. Everything else
//! is an error, and so a temporary failure for the recipient: a result code other than
//! success, several entries (the size limit was hit, or more than one entry matched), a
//! routing attribute with several values, an entry that cannot be decoded. The entry is
//! read without trusting the server: malformed data is an error, never a panic.

use std::sync::Arc;

use ldap3::ResultEntry;
use ldap3::asn1::StructureTag;

use super::config::Attributes;
use super::error::LdapError;
use super::pool::{Reply, result_text};

/// The routing facts of the one entry found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// The entry's DN.
    pub(crate) dn: String,
    /// The mail host attribute's value.
    pub(crate) mail_host: Option<String>,
    /// The routing address attribute's value.
    pub(crate) routing_address: Option<String>,
    /// The server that answered.
    pub(crate) server: Arc<str>,
}

/// LDAP result code for success.
const SUCCESS: u32 = 0;
/// LDAP result code when the server stopped at the size limit.
const SIZE_LIMIT_EXCEEDED: u32 = 4;
/// DNs listed in an ambiguity error.
const MAX_DNS_LISTED: usize = 5;

/// Map a reply: `Ok(None)` no entry, `Ok(Some)` exactly one.
pub(crate) fn map_reply(
    reply: Reply,
    filter: &str,
    attributes: &Attributes,
) -> Result<Option<Found>, LdapError> {
    let server = reply.server;
    if reply.rc != SUCCESS && reply.rc != SIZE_LIMIT_EXCEEDED {
        return Err(LdapError::Search {
            server: server.to_string(),
            rc: reply.rc,
            text: result_text(reply.rc, &reply.text),
        });
    }
    let mut entries = Vec::with_capacity(reply.entries.len());
    for entry in reply.entries {
        match parse_entry(entry) {
            Some(e) => entries.push(e),
            None => {
                return Err(LdapError::Malformed {
                    server: server.to_string(),
                });
            }
        }
    }
    if entries.len() > 1 || reply.rc == SIZE_LIMIT_EXCEEDED {
        let dns: Vec<&str> = entries
            .iter()
            .take(MAX_DNS_LISTED)
            .map(|e| e.dn.as_str())
            .collect();
        return Err(LdapError::Ambiguous {
            server: server.to_string(),
            filter: filter.to_string(),
            count: entries.len().max(2),
            dns: dns.join("; "),
        });
    }
    let Some(entry) = entries.pop() else {
        return Ok(None);
    };
    let mail_host = entry.single(&attributes.mail_host, &server)?;
    let routing_address = entry.single(&attributes.routing_address, &server)?;
    Ok(Some(Found {
        dn: entry.dn,
        mail_host,
        routing_address,
        server,
    }))
}

/// A decoded search result entry.
struct Entry {
    dn: String,
    attrs: Vec<(String, Vec<Vec<u8>>)>,
}

impl Entry {
    /// The one value of `name` (case-insensitive), `None` when absent or blank.
    fn single(&self, name: &str, server: &str) -> Result<Option<String>, LdapError> {
        let values: Vec<&Vec<u8>> = self
            .attrs
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v)
            .collect();
        let values: Vec<&str> = values
            .into_iter()
            .map(|v| std::str::from_utf8(v).map(str::trim))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| LdapError::Malformed {
                server: server.to_string(),
            })?
            .into_iter()
            .filter(|v| !v.is_empty())
            .collect();
        match values.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some((*one).to_string())),
            many => Err(LdapError::MultiValued {
                server: server.to_string(),
                dn: self.dn.clone(),
                attribute: name.to_string(),
                count: many.len(),
            }),
        }
    }
}

/// Decode a SearchResultEntry ([APPLICATION 4] { objectName, attributes }) without
/// trusting its shape.
fn parse_entry(entry: ResultEntry) -> Option<Entry> {
    let mut parts = entry.0.match_id(4)?.expect_constructed()?.into_iter();
    let dn = string(parts.next()?)?;
    let mut attrs = Vec::new();
    for attribute in parts.next()?.expect_constructed()? {
        let mut attribute = attribute.expect_constructed()?.into_iter();
        let name = string(attribute.next()?)?;
        let values = attribute
            .next()?
            .expect_constructed()?
            .into_iter()
            .map(StructureTag::expect_primitive)
            .collect::<Option<Vec<_>>>()?;
        attrs.push((name, values));
    }
    Some(Entry { dn, attrs })
}

fn string(tag: StructureTag) -> Option<String> {
    String::from_utf8(tag.expect_primitive()?).ok()
}

#[cfg(test)]
mod tests {
    use ldap3::asn1::{PL, TagClass};

    use super::*;

    fn octets(s: &str) -> StructureTag {
        StructureTag {
            class: TagClass::Universal,
            id: 4,
            payload: PL::P(s.as_bytes().to_vec()),
        }
    }

    fn seq(id: u64, class: TagClass, inner: Vec<StructureTag>) -> StructureTag {
        StructureTag {
            class,
            id,
            payload: PL::C(inner),
        }
    }

    fn entry(dn: &str, attrs: &[(&str, &[&str])]) -> ResultEntry {
        let attrs = attrs
            .iter()
            .map(|(name, values)| {
                seq(
                    16,
                    TagClass::Universal,
                    vec![
                        octets(name),
                        seq(
                            17,
                            TagClass::Universal,
                            values.iter().map(|v| octets(v)).collect(),
                        ),
                    ],
                )
            })
            .collect();
        ResultEntry::new(seq(
            4,
            TagClass::Application,
            vec![octets(dn), seq(16, TagClass::Universal, attrs)],
        ))
    }

    fn reply(rc: u32, entries: Vec<ResultEntry>) -> Reply {
        Reply {
            server: Arc::from("ldap://test"),
            entries,
            rc,
            text: String::new(),
        }
    }

    fn map(r: Reply) -> Result<Option<Found>, LdapError> {
        map_reply(r, "(mail=x)", &Attributes::default())
    }

    #[test]
    fn one_entry_with_both_attributes() {
        let found = map(reply(
            0,
            vec![entry(
                "uid=a,dc=x",
                &[
                    ("MAILHOST", &["h.example"]),
                    ("mailRoutingAddress", &[" a@b.example "]),
                ],
            )],
        ));
        let found = found.ok().flatten();
        assert_eq!(found.as_ref().map(|f| f.dn.as_str()), Some("uid=a,dc=x"));
        assert_eq!(
            found.as_ref().and_then(|f| f.mail_host.as_deref()),
            Some("h.example")
        );
        assert_eq!(
            found.as_ref().and_then(|f| f.routing_address.as_deref()),
            Some("a@b.example")
        );
    }

    #[test]
    fn no_entry_several_entries_and_bad_results() {
        assert_eq!(map(reply(0, vec![])), Ok(None));
        let two = vec![entry("uid=a", &[]), entry("uid=b", &[])];
        assert!(matches!(
            map(reply(0, two)),
            Err(LdapError::Ambiguous { count: 2, .. })
        ));
        assert!(matches!(
            map(reply(4, vec![entry("uid=a", &[])])),
            Err(LdapError::Ambiguous { .. })
        ));
        assert!(matches!(
            map(reply(32, vec![])),
            Err(LdapError::Search { rc: 32, .. })
        ));
        let multi = vec![entry("uid=a", &[("mailHost", &["a", "b"])])];
        assert!(matches!(
            map(reply(0, multi)),
            Err(LdapError::MultiValued { count: 2, .. })
        ));
    }

    #[test]
    fn malformed_entries_are_errors_not_panics() {
        let bad = ResultEntry::new(octets("not an entry"));
        assert!(matches!(
            map(reply(0, vec![bad])),
            Err(LdapError::Malformed { .. })
        ));
        let short = ResultEntry::new(seq(4, TagClass::Application, vec![octets("uid=a")]));
        assert!(matches!(
            map(reply(0, vec![short])),
            Err(LdapError::Malformed { .. })
        ));
    }
}
