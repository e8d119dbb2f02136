//! The order in which MX hosts are tried (RFC 5321 §5.1): lowest preference first,
//! hosts of equal preference in random order so that load spreads over them.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// At most this many MX hosts are looked up for one domain; a domain with more is
/// misconfigured or hostile, and the address limit would cut the list anyway.
pub(super) const MAX_MX_HOSTS: usize = 10;

/// One MX record: its preference and its host name (lower case, no trailing dot; empty
/// for the root, as in a null MX).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MxRecord {
    pub(super) preference: u16,
    pub(super) host: String,
}

/// Whether the records are a null MX (RFC 7505 §3: a single MX of preference 0 whose
/// exchange is the root).
pub(super) fn is_null_mx(records: &[MxRecord]) -> bool {
    matches!(records, [only] if only.preference == 0 && only.host.is_empty())
}

/// The host names to try, best first: sorted by preference, equal preferences shuffled,
/// a host listed twice kept at its best preference, root exchanges dropped (they have no
/// address), at most [`MAX_MX_HOSTS`].
///
/// The shuffle keys come from `RandomState`, whose SipHash keys differ on every call:
/// unpredictable enough to spread load, and no random-number crate needed.
pub(super) fn ordered_hosts(records: &[MxRecord]) -> Vec<String> {
    let state = RandomState::new();
    let mut keyed: Vec<(u16, u64, &str)> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.host.is_empty())
        .map(|(i, r)| (r.preference, state.hash_one(i), r.host.as_str()))
        .collect();
    keyed.sort_unstable();
    let mut hosts: Vec<String> = Vec::with_capacity(keyed.len().min(MAX_MX_HOSTS));
    for (_, _, host) in keyed {
        if hosts.len() == MAX_MX_HOSTS {
            break;
        }
        if !hosts.iter().any(|h| h == host) {
            hosts.push(host.to_string());
        }
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mx(preference: u16, host: &str) -> MxRecord {
        MxRecord {
            preference,
            host: host.to_string(),
        }
    }

    #[test]
    fn lower_preference_comes_first() {
        let hosts = ordered_hosts(&[mx(20, "b"), mx(5, "a"), mx(30, "c")]);
        assert_eq!(hosts, ["a", "b", "c"]);
    }

    #[test]
    fn equal_preferences_come_in_both_orders() {
        let records = [mx(10, "a"), mx(10, "b"), mx(5, "first")];
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let hosts = ordered_hosts(&records);
            assert_eq!(hosts.first().map(String::as_str), Some("first"));
            seen.insert(hosts);
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
    }

    #[test]
    fn duplicates_keep_their_best_preference_and_root_is_dropped() {
        let hosts = ordered_hosts(&[mx(30, "a"), mx(10, ""), mx(20, "b"), mx(10, "a")]);
        assert_eq!(hosts, ["a", "b"]);
    }

    #[test]
    fn host_count_is_bounded() {
        let records: Vec<MxRecord> = (0..50).map(|i| mx(i, &format!("h{i}"))).collect();
        let hosts = ordered_hosts(&records);
        assert_eq!(hosts.len(), MAX_MX_HOSTS);
        assert_eq!(hosts.first().map(String::as_str), Some("h0"));
    }

    #[test]
    fn null_mx_is_a_single_root_exchange_of_preference_zero() {
        assert!(is_null_mx(&[mx(0, "")]));
        assert!(!is_null_mx(&[mx(10, "")]));
        assert!(!is_null_mx(&[mx(0, ""), mx(10, "b")]));
        assert!(!is_null_mx(&[mx(0, "a")]));
        assert!(!is_null_mx(&[]));
    }
}
