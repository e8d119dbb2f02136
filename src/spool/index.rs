//! The in-memory index: every message in the spool (id → segment, offset, state) and,
//! per segment, what keeps it from being deleted.
//!
//! A segment may be deleted once (a) every message stored in it is final and (b) it holds
//! the latest state record of no message stored in another segment still on disk
//! ("pins"). Rule (b) keeps the record saying "delivered" for as long as the message it
//! refers to exists: deleting it first would bring the message back at the next recovery.
//! Messages stored in a deleted segment are forgotten, which releases their pins.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::envelope::{Head, Status};
use super::id::QueueId;
use super::message::{MessageInfo, MessageState, RecipientStatus};

/// One message in the index.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Summary, state included.
    pub(crate) info: MessageInfo,
    /// The segment holding the message record.
    pub(crate) segment: u32,
    /// The segment holding the latest state record (or the message record).
    pub(crate) state_segment: u32,
}

impl Entry {
    /// The message's full state.
    pub(crate) fn status(&self) -> Status {
        Status {
            state: self.info.state,
            recipients: self.info.recipient_status.clone(),
            changed_at: self.info.changed_at,
        }
    }
}

/// What keeps a segment on disk.
#[derive(Debug, Clone, Default)]
struct SegmentUse {
    path: PathBuf,
    /// Messages stored here that are not final.
    live: u64,
    /// Messages stored elsewhere whose latest state record is here.
    pins: u64,
    /// Handed to the reclaimer, not yet gone.
    reclaiming: bool,
}

/// Messages and segments.
#[derive(Debug, Default)]
pub(crate) struct Index {
    messages: BTreeMap<QueueId, Entry>,
    segments: BTreeMap<u32, SegmentUse>,
}

impl Index {
    /// Registers a segment (before any record in it is added).
    pub(crate) fn add_segment(&mut self, number: u32, path: &Path) {
        self.segments.entry(number).or_insert_with(|| SegmentUse {
            path: path.to_path_buf(),
            ..SegmentUse::default()
        });
    }

    /// The message `id`.
    pub(crate) fn get(&self, id: &QueueId) -> Option<&Entry> {
        self.messages.get(id)
    }

    /// Whether a message `id` is in the index.
    pub(crate) fn contains(&self, id: &QueueId) -> bool {
        self.messages.contains_key(id)
    }

    /// Adds a message stored at `offset` of segment `segment` in state queued; `false` if
    /// the id is already there (the existing entry is kept).
    pub(crate) fn insert(&mut self, segment: u32, offset: u64, head: &Head) -> bool {
        if self.messages.contains_key(&head.id) {
            return false;
        }
        let seg = self.segments.entry(segment).or_default();
        seg.live += 1;
        let info = MessageInfo {
            id: head.id,
            received_at: head.received_at,
            sender: head.sender.clone(),
            recipients: head.recipients.iter().map(|r| r.original.clone()).collect(),
            next_hops: head
                .recipients
                .iter()
                .map(|r| r.route_kind.clone())
                .collect(),
            size: head.body_size,
            state: MessageState::Queued,
            recipient_status: vec![RecipientStatus::default(); head.recipients.len()],
            segment: seg.path.clone(),
            offset,
            changed_at: None,
        };
        self.messages.insert(
            head.id,
            Entry {
                info,
                segment,
                state_segment: segment,
            },
        );
        true
    }

    /// Records that the latest state of `id`, written in segment `segment`, is `status`;
    /// `false` if the message is unknown (its segment was deleted).
    pub(crate) fn set_status(&mut self, id: &QueueId, segment: u32, status: Status) -> bool {
        let Some(entry) = self.messages.get_mut(id) else {
            return false;
        };
        let was_final = entry.info.state.is_final();
        if entry.state_segment != entry.segment
            && let Some(s) = self.segments.get_mut(&entry.state_segment)
        {
            s.pins = s.pins.saturating_sub(1);
        }
        entry.state_segment = segment;
        if segment != entry.segment {
            self.segments.entry(segment).or_default().pins += 1;
        }
        let is_final = status.state.is_final();
        if let Some(s) = self.segments.get_mut(&entry.segment) {
            match (was_final, is_final) {
                (false, true) => s.live = s.live.saturating_sub(1),
                (true, false) => s.live += 1,
                _ => {}
            }
        }
        entry.info.state = status.state;
        entry.info.recipient_status = status.recipients;
        entry.info.changed_at = status.changed_at;
        true
    }

    /// Segments that may be deleted now, oldest first (never `keep`, the active one, nor
    /// one already being reclaimed).
    pub(crate) fn deletable(&self, keep: Option<u32>) -> Vec<(u32, PathBuf)> {
        self.segments
            .iter()
            .filter(|(n, s)| Some(**n) != keep && s.live == 0 && s.pins == 0 && !s.reclaiming)
            .map(|(n, s)| (*n, s.path.clone()))
            .collect()
    }

    /// [`Index::deletable`], marking them as being reclaimed so the next call skips them.
    pub(crate) fn claim_deletable(&mut self, keep: Option<u32>) -> Vec<(u32, PathBuf)> {
        let victims = self.deletable(keep);
        for (n, _) in &victims {
            if let Some(s) = self.segments.get_mut(n) {
                s.reclaiming = true;
            }
        }
        victims
    }

    /// Claimed segments that were not deleted: they may be claimed again.
    pub(crate) fn unclaim(&mut self, victims: &[(u32, PathBuf)]) {
        for (number, _) in victims {
            if let Some(s) = self.segments.get_mut(number) {
                s.reclaiming = false;
            }
        }
    }

    /// Forgets segment `number` and the (final) messages stored in it, releasing the pins
    /// they held.
    pub(crate) fn remove_segment(&mut self, number: u32) {
        let mut released = Vec::new();
        self.messages.retain(|_, e| {
            if e.segment != number {
                return true;
            }
            if e.state_segment != number {
                released.push(e.state_segment);
            }
            false
        });
        for s in released {
            if let Some(seg) = self.segments.get_mut(&s) {
                seg.pins = seg.pins.saturating_sub(1);
            }
        }
        self.segments.remove(&number);
    }

    /// Messages that are not final, oldest first.
    pub(crate) fn live(&self) -> Vec<MessageInfo> {
        let mut out: Vec<MessageInfo> = self
            .messages
            .values()
            .filter(|e| !e.info.state.is_final())
            .map(|e| e.info.clone())
            .collect();
        out.sort_by_key(|a| (a.received_at, a.id));
        out
    }

    /// Adds to `acc` the messages after `after` (all from the start if `None`), at most
    /// `limit` of them: per next hop with a recipient still open, how many and the
    /// oldest arrival. Returns where to go on from, `None` once the end is reached.
    pub(crate) fn backlog_chunk(
        &self,
        after: Option<QueueId>,
        limit: usize,
        acc: &mut BTreeMap<String, (u64, SystemTime)>,
    ) -> Option<QueueId> {
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut walked = 0;
        let mut last = None;
        let mut counted: Vec<&str> = Vec::new();
        for (id, e) in self.messages.range((lower, Bound::Unbounded)).take(limit) {
            walked += 1;
            last = Some(*id);
            if e.info.state.is_final() {
                continue;
            }
            counted.clear();
            let open = e
                .info
                .next_hops
                .iter()
                .zip(&e.info.recipient_status)
                .filter(|(_, s)| !s.state.is_final());
            for (hop, _) in open {
                if counted.contains(&hop.as_str()) {
                    continue;
                }
                counted.push(hop);
                // Look up before inserting: a String per message would be a million
                // allocations on a large backlog.
                match acc.get_mut(hop.as_str()) {
                    Some(slot) => {
                        slot.0 += 1;
                        slot.1 = slot.1.min(e.info.received_at);
                    }
                    None => {
                        acc.insert(hop.clone(), (1, e.info.received_at));
                    }
                }
            }
        }
        (walked == limit).then_some(last).flatten()
    }

    /// Number of messages that are not final.
    pub(crate) fn live_count(&self) -> usize {
        self.messages
            .values()
            .filter(|e| !e.info.state.is_final())
            .count()
    }

    /// Number of messages (final ones not yet reclaimed included) and of segments.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.messages.len(), self.segments.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn head(id: QueueId) -> Head {
        Head {
            id,
            received_at: SystemTime::now(),
            client: String::new(),
            sender: String::new(),
            params: Vec::new(),
            table_version: String::new(),
            body_size: 1,
            recipients: vec![Default::default()],
        }
    }

    fn status(state: MessageState) -> Status {
        Status {
            state,
            recipients: vec![RecipientStatus::default()],
            changed_at: None,
        }
    }

    #[test]
    fn pins_keep_final_marks_until_the_message_segment_goes() {
        let mut ix = Index::default();
        for n in 1..=3 {
            ix.add_segment(n, Path::new("x"));
        }
        let (a, b) = (QueueId::new(), QueueId::new());
        assert!(ix.insert(1, 32, &head(a)));
        assert!(ix.insert(1, 132, &head(b)));
        assert!(!ix.insert(2, 32, &head(a)));
        // a delivered, recorded in segment 2; b held, recorded in segment 3.
        assert!(ix.set_status(&a, 2, status(MessageState::Delivered)));
        assert!(ix.set_status(&b, 3, status(MessageState::Held)));
        assert_eq!(ix.live().len(), 1);
        // 1 has a live message; 2 holds a's final state; 3 is active.
        assert!(ix.deletable(Some(3)).is_empty());
        assert!(ix.set_status(&b, 3, status(MessageState::Deleted)));
        let d: Vec<u32> = ix.deletable(Some(3)).into_iter().map(|(n, _)| n).collect();
        assert_eq!(d, vec![1]);
        ix.remove_segment(1);
        let d: Vec<u32> = ix.deletable(Some(3)).into_iter().map(|(n, _)| n).collect();
        assert_eq!(d, vec![2]);
        // Claimed segments are not offered twice, unless their deletion failed.
        assert_eq!(ix.claim_deletable(Some(3)).len(), 1);
        assert!(ix.deletable(Some(3)).is_empty());
        ix.unclaim(&[(2, PathBuf::from("x"))]);
        assert_eq!(ix.deletable(Some(3)).len(), 1);
        assert!(!ix.set_status(&a, 3, status(MessageState::Queued)));
        assert_eq!(ix.counts(), (0, 2));
    }

    #[test]
    fn backlog_counts_each_message_once_per_open_next_hop_in_any_chunk_size() {
        let mut ix = Index::default();
        ix.add_segment(1, Path::new("x"));
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000);
        let mut ids = Vec::new();
        for n in 0..10u64 {
            let id = QueueId::new();
            let mut h = head(id);
            h.received_at = t0 + std::time::Duration::from_secs(n);
            // Two recipients for "a", one for "b".
            h.recipients = vec![Default::default(); 3];
            assert!(ix.insert(1, n * 100, &h));
            let e = ix.messages.get_mut(&id).unwrap();
            e.info.next_hops = vec!["a".into(), "b".into(), "a".into()];
            ids.push(id);
        }
        // The first message is done for "b"; the second is delivered.
        let mut s = status(MessageState::Queued);
        s.recipients = vec![RecipientStatus::default(); 3];
        s.recipients[1].state = crate::spool::RecipientState::Delivered;
        assert!(ix.set_status(&ids[0], 1, s));
        assert!(ix.set_status(&ids[1], 1, status(MessageState::Delivered)));
        let oldest = |n: u64| t0 + std::time::Duration::from_secs(n);
        for limit in [1, 3, 10, 1000] {
            let mut acc = BTreeMap::new();
            let mut from = None;
            let mut rounds = 0;
            loop {
                rounds += 1;
                match ix.backlog_chunk(from, limit, &mut acc) {
                    Some(last) => from = Some(last),
                    None => break,
                }
            }
            assert!(rounds <= 10 / limit + 2, "{rounds} rounds of {limit}");
            let got: Vec<(String, u64, SystemTime)> =
                acc.into_iter().map(|(k, (n, t))| (k, n, t)).collect();
            assert_eq!(
                got,
                vec![("a".into(), 9, oldest(0)), ("b".into(), 8, oldest(2))],
                "chunks of {limit}"
            );
        }
    }
}
