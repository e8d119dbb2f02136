//! Search filters: the configured template and RFC 4515 escaping of every value put in it.
//!
//! Input: a template such as `(|(mail=%s)(mailLocalAddress=%s))` and a recipient.
//! Output: the filter string sent to the server. Placeholders (the Postfix `ldap_table`
//! spelling): `%s` the whole address, `%u` the local part, `%d` the domain, `%%` a
//! percent sign. Values are the recipient's matching key: the local part case-folded and
//! unquoted, the domain in lower-case A-labels. Every value is escaped, so a recipient
//! such as `"*)(uid=*"@example.com` matches only an entry with exactly that address.

use std::fmt;

use crate::routing::address::Address;

/// A parsed filter template.
///
/// ```
/// use splitmx::ldap::FilterTemplate;
/// use splitmx::Address;
///
/// let t = FilterTemplate::parse("(|(mail=%s)(uid=%u))").unwrap();
/// let rcpt = Address::parse("\"*)(uid=*\"@Example.com").unwrap();
/// assert_eq!(t.render(&rcpt), r"(|(mail=\2a\29\28uid=\2a@example.com)(uid=\2a\29\28uid=\2a))");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct FilterTemplate {
    text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Address,
    Local,
    Domain,
}

impl FilterTemplate {
    /// Parse a template; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<FilterTemplate, String> {
        let text = text.trim();
        if !(text.starts_with('(') && text.ends_with(')')) {
            return Err(format!("'{text}' must be enclosed in parentheses"));
        }
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut depth: i32 = 0;
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            let placeholder = match c {
                '%' => match chars.next() {
                    Some('s') => Part::Address,
                    Some('u') => Part::Local,
                    Some('d') => Part::Domain,
                    Some('%') => {
                        literal.push('%');
                        continue;
                    }
                    Some(other) => {
                        return Err(format!(
                            "unknown placeholder '%{other}' in '{text}' (use %s address, %u local part, %d domain, %% percent)"
                        ));
                    }
                    None => return Err(format!("'{text}' ends with a lone '%'")),
                },
                '(' | ')' => {
                    depth += if c == '(' { 1 } else { -1 };
                    if depth < 0 {
                        return Err(format!("unbalanced ')' in '{text}'"));
                    }
                    if depth == 0 && !chars.as_str().is_empty() {
                        return Err(format!(
                            "'{text}' is several filters; combine them with (|...) or (&...)"
                        ));
                    }
                    literal.push(c);
                    continue;
                }
                '\0' => return Err("the filter contains a NUL character".to_string()),
                _ => {
                    literal.push(c);
                    continue;
                }
            };
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(placeholder);
        }
        if depth != 0 {
            return Err(format!("unbalanced '(' in '{text}'"));
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        if !parts.iter().any(|p| !matches!(p, Part::Literal(_))) {
            return Err(format!(
                "'{text}' has no placeholder: every recipient would get the same answer (use %s, %u or %d)"
            ));
        }
        let template = FilterTemplate {
            text: text.to_string(),
            parts,
        };
        // Let the LDAP library's own parser judge the result for a plain recipient.
        let sample = Address::parse("sample@example.com")
            .map_err(|e| format!("internal error: sample address: {e}"))?;
        let rendered = template.render(&sample);
        ldap3::parse_filter(&rendered)
            .map_err(|()| format!("'{text}' is not a valid LDAP filter (RFC 4515)"))?;
        Ok(template)
    }

    /// The filter for `rcpt`, with every substituted value escaped.
    pub fn render(&self, rcpt: &Address) -> String {
        let mut out = String::with_capacity(self.text.len() + 2 * rcpt.key().len());
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Address => escape_into(&mut out, rcpt.key()),
                Part::Local => escape_into(&mut out, rcpt.local_key()),
                Part::Domain => escape_into(&mut out, rcpt.domain()),
            }
        }
        out
    }

    /// The template as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for FilterTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FilterTemplate").field(&self.text).finish()
    }
}

impl fmt::Display for FilterTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Escape a value for an LDAP filter (RFC 4515 section 3): `*`, `(`, `)`, `\` and NUL
/// become `\2a`, `\28`, `\29`, `\5c`, `\00`; other control characters are escaped too,
/// so logs stay on one line. UTF-8 is kept as it is.
///
/// ```
/// assert_eq!(splitmx::ldap::escape_filter_value("a*b(c)\\d\0"), r"a\2ab\28c\29\5cd\00");
/// ```
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    escape_into(&mut out, value);
    out
}

fn escape_into(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for c in value.chars() {
        match c {
            '*' | '(' | ')' | '\\' | '\0' | '\u{1}'..='\u{1f}' | '\u{7f}' => {
                let b = c as u32;
                out.push('\\');
                out.push(char::from(HEX[(b >> 4) as usize & 0xf]));
                out.push(char::from(HEX[b as usize & 0xf]));
            }
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn escapes_the_rfc_4515_specials_and_controls() {
        assert_eq!(escape_filter_value("*)(uid=*"), r"\2a\29\28uid=\2a");
        assert_eq!(escape_filter_value("a\\b"), r"a\5cb");
        assert_eq!(escape_filter_value("nul\0x"), r"nul\00x");
        assert_eq!(escape_filter_value("tab\tdel\u{7f}"), r"tab\09del\7f");
        assert_eq!(escape_filter_value("jürgen"), "jürgen");
        assert_eq!(escape_filter_value("plain.user-1"), "plain.user-1");
    }

    #[test]
    fn escaped_values_parse_back_to_themselves() {
        for v in ["*", "*)(uid=*", "a\\b", "x\0y", "(", ")", "\\2a", "ü*"] {
            let filter = format!("(mail={})", escape_filter_value(v));
            assert!(ldap3::parse_filter(&filter).is_ok(), "{filter}");
        }
    }

    #[test]
    fn renders_the_placeholders() {
        let t = FilterTemplate::parse("(&(objectClass=*)(|(mail=%s)(uid=%u))(o=%d)(p=100%%))")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            t.render(&addr("Alice@Example.COM")),
            "(&(objectClass=*)(|(mail=alice@example.com)(uid=alice))(o=example.com)(p=100%))"
        );
        assert_eq!(
            t.render(&addr("\"a(b)\\\\c*\"@example.com")),
            r"(&(objectClass=*)(|(mail=a\28b\29\5cc\2a@example.com)(uid=a\28b\29\5cc\2a))(o=example.com)(p=100%))"
        );
    }

    #[test]
    fn rejects_bad_templates() {
        for bad in [
            "mail=%s",
            "(mail=%x)",
            "(mail=%s",
            "(mail=%s))(",
            "(mail=alice)",
            "(mail=%s)(uid=%u)",
            "(mail=%)",
        ] {
            assert!(FilterTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
