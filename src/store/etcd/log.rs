//! The entries of a shard's log in etcd: each group commit's record for the shard (the
//! codec's commit-log record, `codec::batch`) in one entry, or, when it is larger than one
//! transaction may carry, in a group of entries that counts only once all are present.
//!
//! An entry is one etcd value: magic `VSGL`(4) version(1) the group's first index(8, LE)
//! the entry's place in the group(4, LE) the group's size(4, LE), the record's bytes,
//! then the xxh3-64 of everything before (8, LE). A damaged entry is an error, never
//! skipped: only a group whose entries are all undamaged but not all present (a commit
//! cut short between its transactions, never acknowledged) is left out.

use crate::error::{DecodeError, Result};

const MAGIC: [u8; 4] = *b"VSGL";
const VERSION: u8 = 1;
/// Bytes of an entry beyond its share of the record.
pub(super) const OVERHEAD: usize = HEADER + CHECKSUM;
const HEADER: usize = 21;
const CHECKSUM: usize = 8;

/// Splits `record` into the entries of the group that starts at log index
/// `first`, each at most `budget` bytes (at least one entry, even for an empty
/// record; a budget too small for any payload still gives one byte each).
pub(super) fn encode(first: u64, record: &[u8], budget: usize) -> Vec<Vec<u8>> {
    let room = budget.saturating_sub(OVERHEAD).max(1);
    let parts: Vec<&[u8]> = if record.is_empty() { vec![&[]] } else { record.chunks(room).collect() };
    let count = u32::try_from(parts.len()).unwrap_or(u32::MAX);
    parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            let mut e = Vec::with_capacity(OVERHEAD + part.len());
            e.extend_from_slice(&MAGIC);
            e.push(VERSION);
            e.extend_from_slice(&first.to_le_bytes());
            e.extend_from_slice(&(i as u32).to_le_bytes());
            e.extend_from_slice(&count.to_le_bytes());
            e.extend_from_slice(part);
            let sum = xxhash_rust::xxh3::xxh3_64(&e);
            e.extend_from_slice(&sum.to_le_bytes());
            e
        })
        .collect()
}

/// One decoded entry.
#[derive(Debug, PartialEq, Eq)]
struct Entry<'a> {
    first: u64,
    place: u32,
    count: u32,
    part: &'a [u8],
}

fn decode(index: u64, bytes: &[u8]) -> Result<Entry<'_>> {
    let malformed = |why: String| DecodeError::Malformed(format!("log entry {index:x}: {why}"));
    let (needed, available) = (OVERHEAD as u64, bytes.len() as u64);
    if available < needed {
        return Err(DecodeError::Truncated { needed, available }.into());
    }
    if bytes[..4] != MAGIC {
        return Err(DecodeError::BadMagic { found: bytes[..4].to_vec() }.into());
    }
    if bytes[4] != VERSION {
        return Err(DecodeError::UnsupportedVersion(bytes[4]).into());
    }
    let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM);
    let stored = u64::from_le_bytes(sum.try_into().expect("8 bytes"));
    let computed = xxhash_rust::xxh3::xxh3_64(body);
    if stored != computed {
        return Err(DecodeError::ChecksumMismatch { stored, computed }.into());
    }
    let first = u64::from_le_bytes(body[5..13].try_into().expect("8 bytes"));
    let place = u32::from_le_bytes(body[13..17].try_into().expect("4 bytes"));
    let count = u32::from_le_bytes(body[17..21].try_into().expect("4 bytes"));
    if place >= count || first.checked_add(u64::from(place)) != Some(index) {
        return Err(malformed(format!("claims place {place} of {count} in the group at {first:x}")).into());
    }
    Ok(Entry { first, place, count, part: &body[HEADER..] })
}

/// The records of a shard's log entries `(index, value)`, given in rising index
/// order: each complete group's record and the index it starts at. A group
/// missing an entry is left out (its commit never finished); an entry that
/// does not decode, or sits where its header says it does not, fails it all.
pub(super) fn records<'a>(entries: impl IntoIterator<Item = (u64, &'a [u8])>) -> Result<Vec<(u64, Vec<u8>)>> {
    let mut out = Vec::new();
    // The group being gathered: its first index, size, and the bytes so far.
    let mut open: Option<(u64, u32, u32, Vec<u8>)> = None;
    for (index, value) in entries {
        let e = decode(index, value)?;
        match &mut open {
            Some((first, count, seen, bytes))
                if *first == e.first && *count == e.count && *seen == e.place =>
            {
                bytes.extend_from_slice(e.part);
                *seen += 1;
            }
            // A new group: one left open is incomplete and left out.
            _ if e.place == 0 => open = Some((e.first, e.count, 1, e.part.to_vec())),
            // The rest of a group whose start is missing.
            _ => {
                open = None;
                continue;
            }
        }
        if let Some((first, count, seen, _)) = &open
            && seen == count
        {
            let first = *first;
            let (_, _, _, bytes) = open.take().expect("checked above");
            out.push((first, bytes));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn lay(first: u64, entries: Vec<Vec<u8>>) -> Vec<(u64, Vec<u8>)> {
        entries.into_iter().enumerate().map(|(i, e)| (first + i as u64, e)).collect()
    }

    fn read(log: &[(u64, Vec<u8>)]) -> Result<Vec<(u64, Vec<u8>)>> {
        records(log.iter().map(|(i, v)| (*i, v.as_slice())))
    }

    #[test]
    fn groups_round_trip_within_their_budget() {
        let record: Vec<u8> = (0..1_000u32).map(|i| i as u8).collect();
        for budget in [1, 30, 100, 1_000, 1 << 20] {
            let entries = encode(5, &record, budget);
            assert!(entries.iter().all(|e| e.len() <= budget.max(OVERHEAD + 1)));
            assert_eq!(read(&lay(5, entries)).unwrap(), vec![(5, record.clone())], "budget {budget}");
        }
        assert_eq!(read(&lay(0, encode(0, &[], 100))).unwrap(), vec![(0, vec![])]);
    }

    #[test]
    fn an_incomplete_group_is_left_out_and_the_next_one_read() {
        let (a, b, c) = (vec![1u8; 300], vec![2u8; 300], vec![3u8; 10]);
        let mut log = lay(0, encode(0, &a, 100));
        let mut cut = lay(log.len() as u64, encode(log.len() as u64, &b, 100));
        cut.pop();
        // The next commit starts after what the cut one left.
        let next = log.len() as u64 + cut.len() as u64;
        log.extend(cut);
        log.extend(lay(next, encode(next, &c, 100)));
        assert_eq!(read(&log).unwrap(), vec![(0, a), (next, c)]);
        // A group missing its first entry is left out too.
        let tail = lay(3, encode(3, &[4u8; 300], 100));
        assert_eq!(read(&tail[1..]).unwrap(), vec![]);
    }

    #[test]
    fn damaged_or_misplaced_entries_fail_the_read() {
        let log = lay(7, encode(7, &[9u8; 50], 1 << 10));
        let entry = &log[0].1;
        for i in 0..entry.len() {
            let mut bad = entry.clone();
            bad[i] ^= 0x40;
            assert!(matches!(read(&[(7, bad)]), Err(Error::Decode(_))), "byte {i}");
        }
        for n in 0..entry.len() {
            assert!(matches!(read(&[(7, entry[..n].to_vec())]), Err(Error::Decode(_))), "length {n}");
        }
        assert!(matches!(read(&[(8, entry.clone())]), Err(Error::Decode(DecodeError::Malformed(_)))));
    }
}
