//! This machine's own IP addresses, read from Linux's `/proc` (no `unsafe`, no
//! `getifaddrs`): IPv4 from the `/32 host LOCAL` entries of `/proc/net/fib_trie`, IPv6
//! from `/proc/net/if_inet6`.
//!
//! Elsewhere, or when `/proc` cannot be read, the set is empty and only loopback
//! addresses count as this machine's (see [`super::SelfGuard`]). Both files are read with
//! a size limit and parsed line by line; a line that does not parse is skipped.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// Bytes read from one `/proc` file at most. `fib_trie` lists every route, so a router
/// with a full table has a large one; the local entries are usually near the end.
const MAX_FILE_BYTES: u64 = 64 << 20;
/// Addresses kept at most.
const MAX_ADDRESSES: usize = 4096;

/// The addresses found in `/proc`; empty when it cannot be read.
pub(super) fn local_addresses() -> HashSet<IpAddr> {
    let mut found = HashSet::new();
    read_lines(
        Path::new("/proc/net/fib_trie"),
        &mut FibTrie::default(),
        &mut found,
    );
    read_lines(Path::new("/proc/net/if_inet6"), &mut IfInet6, &mut found);
    found
}

/// A line-by-line parser of one `/proc` file.
trait LineParser {
    fn line(&mut self, line: &str) -> Option<IpAddr>;
}

fn read_lines(path: &Path, parser: &mut dyn LineParser, found: &mut HashSet<IpAddr>) {
    let Ok(file) = File::open(path) else {
        tracing::debug!(path = %path.display(), "local addresses not readable");
        return;
    };
    let mut reader = BufReader::new(file.take(MAX_FILE_BYTES));
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if let Some(ip) = parser.line(&line) {
            if found.len() >= MAX_ADDRESSES {
                break;
            }
            found.insert(ip);
        }
    }
}

/// `/proc/net/fib_trie`: a leaf line `|-- 192.0.2.1` followed by its entries, of which
/// `/32 host LOCAL` marks an address of this machine.
#[derive(Default)]
struct FibTrie {
    leaf: Option<Ipv4Addr>,
}

impl LineParser for FibTrie {
    fn line(&mut self, line: &str) -> Option<IpAddr> {
        let line = line.trim();
        if let Some(leaf) = line.strip_prefix("|--") {
            self.leaf = leaf.trim().parse().ok();
            return None;
        }
        if line.starts_with("+--") {
            self.leaf = None;
            return None;
        }
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("/32"), Some("host"), Some("LOCAL")) => self.leaf.map(IpAddr::V4),
            _ => None,
        }
    }
}

/// `/proc/net/if_inet6`: one address per line, the first field 32 hex digits.
struct IfInet6;

impl LineParser for IfInet6 {
    fn line(&mut self, line: &str) -> Option<IpAddr> {
        let hex = line.split_whitespace().next()?;
        if hex.len() != 32 {
            return None;
        }
        let bits = u128::from_str_radix(hex, 16).ok()?;
        Some(IpAddr::V6(Ipv6Addr::from(bits)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(parser: &mut dyn LineParser, text: &str) -> Vec<IpAddr> {
        text.lines().filter_map(|l| parser.line(l)).collect()
    }

    #[test]
    fn fib_trie_local_host_entries_are_addresses() {
        let text = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.0.0.0/24 2 0 2
        |-- 10.0.0.0
           /24 link UNICAST
        |-- 10.0.0.7
           /32 host LOCAL
        |-- 10.0.0.255
           /32 link BROADCAST
     +-- 127.0.0.0/8 2 0 2
        |-- 127.0.0.1
           /32 host LOCAL
        |-- not-an-address
           /32 host LOCAL
";
        let found = parse(&mut FibTrie::default(), text);
        assert_eq!(
            found,
            [IpAddr::from([10, 0, 0, 7]), IpAddr::from([127, 0, 0, 1])]
        );
    }

    #[test]
    fn if_inet6_first_field_is_the_address() {
        let text = "00000000000000000000000000000001 01 80 10 80       lo
fe800000000000000000000000000001 02 40 20 80     eth0
garbage
0123 01 80 10 80 short
";
        let found = parse(&mut IfInet6, text);
        assert_eq!(
            found,
            [
                IpAddr::V6(Ipv6Addr::LOCALHOST),
                "fe80::1".parse::<IpAddr>().unwrap()
            ]
        );
    }
}
