//! A session's progress journal: one small entry per acknowledged fragment,
//! appended to the session's own `.part` file past the end of the file being
//! uploaded, so that one `fdatasync` makes a fragment's bytes and the record that
//! counts them durable together.
//!
//! ```text
//! .part:  [0, size)          the file's bytes, written at their offsets
//!         [size, size + j)   entries, appended: "UPJ1" | len u32 | crc32c u32 | JSON
//! ```
//!
//! The session's JSON record is written at creation and at the changes that are
//! not a fragment's progress (completion, a size learned from the first fragment,
//! recovery, a failed commit), and when the journal passes [`COMPACT_AT`]; each
//! rewrite draws a new random epoch ([`super::SessionRecord::journal_epoch`]) and
//! the journal starts again at its beginning. Start-up replays, from there, the
//! entries that parse, check out (magic, CRC-32C, the position they were written
//! at, the record's epoch), change nothing but the session's progress, and
//! continue its bytes without a gap; the first that does not ends the journal (a
//! torn tail, or an older epoch's entries), and the next entry is written over it.
//! An older epoch's entries, or bytes a client once wrote past a size it later
//! declared smaller, never count: they would need the epoch, 64 random bits.
//! Completion cuts the `.part` to the file's size before it becomes the
//! attachment.
//!
//! Before this journal each fragment rewrote the JSON record (a temporary file, its
//! sync, a rename, the directory's sync): three flushes per fragment and a record
//! that grew with every fragment. Now it is one flush and one small write.

use serde::{Deserialize, Serialize};
use upsession_core::drive::ContentHasher;
use upsession_core::session::SessionSnapshot;

use super::{FragmentSum, SessionRecord};

const MAGIC: &[u8; 4] = b"UPJ1";
/// An entry's header: magic, length, CRC-32C.
pub(crate) const HEADER: usize = 12;
/// No entry is larger (a snapshot and a drive upload's hasher are a few hundred
/// bytes): a length past it is a torn or foreign header.
pub(crate) const MAX_ENTRY: usize = 64 * 1024;
/// A journal this long is folded into a rewrite of the record (a few thousand
/// fragments): start-up reads at most this much of it and one entry more.
#[cfg(not(test))]
pub(crate) const COMPACT_AT: u64 = 1 << 20;
/// Small in unit tests: the power-loss runs fold journals every few fragments.
#[cfg(test)]
pub(crate) const COMPACT_AT: u64 = 2 << 10;

/// One acknowledged fragment: what [`SessionRecord::commit`] changed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Entry {
    /// The record's epoch it continues (0 until a record's first rewrite).
    #[serde(default)]
    pub(crate) epoch: u64,
    /// Where in the journal it was written.
    pub(crate) at: u64,
    pub(crate) sum: FragmentSum,
    pub(crate) snapshot: SessionSnapshot,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hasher: Option<ContentHasher>,
}

impl Entry {
    /// The entry that takes a session from its record to `next` (its last sum is
    /// the fragment), written at `at`.
    pub(crate) fn of(next: &SessionRecord, at: u64) -> Option<Self> {
        Some(Self {
            epoch: next.journal_epoch,
            at,
            sum: *next.sums.last()?,
            snapshot: next.snapshot.clone(),
            hasher: next.drive.as_ref().map(|d| d.hasher.clone()),
        })
    }

    /// The entry as written: header and JSON (well under [`MAX_ENTRY`]: a
    /// snapshot and a hasher are a few hundred bytes).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("an entry serialises");
        let mut out = Vec::with_capacity(HEADER + json.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&u32::try_from(json.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&crc32c(&json).to_le_bytes());
        out.extend_from_slice(&json);
        out
    }

    /// Applies the entry to `record`, if it continues its bytes without a gap and
    /// changes nothing but its progress (the bytes received, the expiry).
    pub(crate) fn apply(self, record: &mut SessionRecord) -> bool {
        let continues = self.epoch == record.journal_epoch
            && self.sum.start == received_end(record)
            && self.sum.end > self.sum.start
            && self.snapshot.received == [[0, self.sum.end]]
            && self.snapshot.expires_at <= record.snapshot.hard_expiry;
        let mut unchanged = self.snapshot.clone();
        unchanged.received.clone_from(&record.snapshot.received);
        unchanged.expires_at = record.snapshot.expires_at;
        if !continues || unchanged != record.snapshot {
            return false;
        }
        record.snapshot = self.snapshot;
        record.attachment.size = record.snapshot.size;
        record.sums.push(self.sum);
        if let (Some(drive), Some(hasher)) = (&mut record.drive, self.hasher) {
            drive.hasher = hasher;
        }
        true
    }
}

/// Where a session's bytes end (they are one range from 0: fragments are taken in
/// order).
pub(crate) fn received_end(record: &SessionRecord) -> u64 {
    record
        .snapshot
        .received
        .iter()
        .map(|r| r[1])
        .max()
        .unwrap_or(0)
}

/// Where a session's journal starts in its `.part`: past the file's end, once its
/// size is known.
pub(crate) fn base(record: &SessionRecord) -> Option<u64> {
    record
        .snapshot
        .unsized_max
        .is_none()
        .then_some(record.snapshot.size)
}

/// Whether `bytes` begin with an entry's header (its magic and a plausible length).
pub(crate) fn starts_entry(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER
        && &bytes[..4] == MAGIC
        && u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize <= MAX_ENTRY
}

/// A new epoch for a rewritten record: from the operating system's random source
/// (unguessable by a client), never 0 (the shared store's).
pub(crate) fn new_epoch() -> u64 {
    getrandom::u64()
        .unwrap_or_else(|_| fastrand::u64(..))
        .max(1)
}

/// The entries that parse from `bytes`, the journal's bytes from position `from`
/// on, each with the position just past it.
pub(crate) fn decode(bytes: &[u8], from: u64) -> Vec<(Entry, u64)> {
    let mut entries = Vec::new();
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + HEADER) {
        if &header[..4] != MAGIC {
            break;
        }
        let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        if len > MAX_ENTRY {
            break;
        }
        let Some(json) = bytes.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        if crc32c(json) != crc {
            break;
        }
        let Ok(entry) = serde_json::from_slice::<Entry>(json) else {
            break;
        };
        if entry.at != from + at as u64 {
            break;
        }
        at += HEADER + len;
        entries.push((entry, from + at as u64));
    }
    entries
}

fn crc32c(bytes: &[u8]) -> u32 {
    let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    digest.update(bytes);
    // CRC-32C fits 32 bits.
    u32::try_from(digest.finalize()).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::pedantic)] // test code favours brevity over pedantry
mod tests {
    use super::*;
    use std::time::Duration;

    fn snapshot(end: u64) -> SessionSnapshot {
        let (record, _) = crate::store::tests::new_session("s", "i", 100);
        let mut snapshot = record.snapshot;
        snapshot.expires_at += Duration::from_secs(end);
        snapshot.received = if end == 0 { vec![] } else { vec![[0, end]] };
        snapshot
    }

    fn entry(at: u64, start: u64, end: u64) -> Entry {
        Entry {
            epoch: 0,
            at,
            sum: FragmentSum {
                start,
                end,
                crc32c: 7,
            },
            snapshot: snapshot(end),
            hasher: None,
        }
    }

    fn journal(entries: &[(u64, u64)], from: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for &(start, end) in entries {
            out.extend(entry(from + out.len() as u64, start, end).encode());
        }
        out
    }

    #[test]
    fn entries_read_back_in_order_and_end_where_the_next_goes() {
        let bytes = journal(&[(0, 10), (10, 25), (25, 40)], 30);
        let entries = decode(&bytes, 30);
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[2].0.sum.end, 40);
        assert_eq!(entries[2].1, 30 + bytes.len() as u64);
    }

    #[test]
    fn a_torn_tail_ends_the_journal_at_every_cut() {
        let bytes = journal(&[(0, 10), (10, 25)], 0);
        let first = entry(0, 0, 10).encode().len();
        for cut in 0..bytes.len() {
            let entries = decode(&bytes[..cut], 0);
            let want = usize::from(cut >= first);
            assert_eq!(entries.len(), want, "cut at {cut}");
            if want == 1 {
                assert_eq!(entries[0].1, first as u64);
            }
        }
        // A flipped byte anywhere in the second entry drops it, never the first.
        for i in first..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            assert_eq!(decode(&bad, 0).len(), 1, "flip at {i}");
        }
        // Zeros (a hole a power loss left) are no entry.
        assert!(decode(&[0; 64], 0).is_empty());
    }

    #[test]
    fn an_entry_read_at_another_position_is_stale() {
        let bytes = entry(0, 0, 10).encode();
        assert!(decode(&bytes, 5).is_empty());
    }

    #[test]
    fn only_an_entry_that_continues_the_bytes_applies() {
        let (mut record, _) = crate::store::tests::new_session("s", "i", 100);
        assert!(!entry(0, 10, 20).apply(&mut record));
        assert!(entry(0, 0, 10).apply(&mut record));
        assert_eq!(received_end(&record), 10);
        assert!(!entry(0, 0, 10).apply(&mut record));
        assert!(entry(0, 10, 30).apply(&mut record));
        assert_eq!(record.sums.len(), 2);
        assert_eq!(record.snapshot.received, vec![[0, 30]]);
    }

    #[test]
    fn an_entry_that_changes_more_than_progress_or_of_another_epoch_is_refused() {
        let (record, _) = crate::store::tests::new_session("s", "i", 100);
        let refused = |change: &dyn Fn(&mut Entry)| {
            let mut e = entry(0, 0, 10);
            change(&mut e);
            !e.apply(&mut record.clone())
        };
        assert!(!refused(&|_| {}));
        assert!(refused(&|e| e.epoch = 9));
        assert!(refused(&|e| e.snapshot.size = 1 << 40));
        assert!(refused(&|e| e.snapshot.max_fragment += 1));
        assert!(refused(
            &|e| e.snapshot.hard_expiry += Duration::from_secs(1)
        ));
        assert!(refused(
            &|e| e.snapshot.expires_at = record.snapshot.hard_expiry + Duration::from_secs(1)
        ));
        assert!(refused(&|e| e.snapshot.received = vec![[0, 20]]));
        assert!(refused(
            &|e| e.snapshot.phase = upsession_core::session::Phase::Completed
        ));
    }
}
