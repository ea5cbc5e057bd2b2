//! The chunks of an intent: one shard's merged row changes of a commit too large for one
//! transaction, written before its commit point so that a later load can finish the commit.
//!
//! A chunk is one etcd value: magic `VSGI`(4) version(1) intent id(8, LE)
//! chunk index(4, LE) rows(4, LE), then per row: id length(4, LE) id,
//! flag(1: 0 removed, 1 put) and for a put value length(4, LE) value; then
//! the xxh3-64 of everything before (8, LE). The id and index tie a chunk to
//! the one intent and place that the shard's metadata names.

use crate::error::{DecodeError, Result};

const MAGIC: [u8; 4] = *b"VSGI";
const VERSION: u8 = 1;
const HEADER: usize = 21;
const CHECKSUM: usize = 8;

/// One row change: the stub's id and its encoded row, `None` when removed.
pub(super) type Row = (String, Option<Vec<u8>>);

fn row_len((id, value): &Row) -> usize {
    4 + id.len() + 1 + value.as_ref().map_or(0, |v| 4 + v.len())
}

/// Packs `rows`, in order, into chunk values of at most `budget` bytes each;
/// a row too large for that gets a chunk of its own (which etcd then refuses:
/// the commit fails before its commit point, and nothing of it is visible).
pub(super) fn encode(id: u64, rows: &[Row], budget: usize) -> Vec<Vec<u8>> {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut count = 0u32;
    for row in rows {
        let len = row_len(row);
        let full = chunks.last().is_none_or(|c| count > 0 && c.len() + len + CHECKSUM > budget);
        if full {
            if let Some(last) = chunks.last_mut() {
                seal(last, count);
            }
            let index = u32::try_from(chunks.len()).unwrap_or(u32::MAX);
            let mut c = Vec::with_capacity(budget.min(1 << 20));
            c.extend_from_slice(&MAGIC);
            c.push(VERSION);
            c.extend_from_slice(&id.to_le_bytes());
            c.extend_from_slice(&index.to_le_bytes());
            c.extend_from_slice(&0u32.to_le_bytes());
            chunks.push(c);
            count = 0;
        }
        let c = chunks.last_mut().expect("pushed above");
        let (row_id, value) = row;
        c.extend_from_slice(&(row_id.len() as u32).to_le_bytes());
        c.extend_from_slice(row_id.as_bytes());
        match value {
            None => c.push(0),
            Some(v) => {
                c.push(1);
                c.extend_from_slice(&(v.len() as u32).to_le_bytes());
                c.extend_from_slice(v);
            }
        }
        count += 1;
    }
    if let Some(last) = chunks.last_mut() {
        seal(last, count);
    }
    chunks
}

/// Writes the row count into the header and appends the checksum.
fn seal(chunk: &mut Vec<u8>, count: u32) {
    chunk[17..21].copy_from_slice(&count.to_le_bytes());
    let sum = xxhash_rust::xxh3::xxh3_64(chunk);
    chunk.extend_from_slice(&sum.to_le_bytes());
}

/// Decodes chunk `index` of intent `id`; anything else, damaged or foreign,
/// is an error (the shard fails closed rather than apply part of a commit).
pub(super) fn decode(bytes: &[u8], id: u64, index: u32) -> Result<Vec<Row>> {
    let malformed = |why: String| DecodeError::Malformed(format!("intent chunk {index}: {why}"));
    let (needed, available) = ((HEADER + CHECKSUM) as u64, bytes.len() as u64);
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
    let mut r = Reader { bytes: body, at: 5 };
    let (found_id, found_index, count) = (r.u64()?, r.u32()?, r.u32()?);
    if (found_id, found_index) != (id, index) {
        return Err(
            malformed(format!("holds chunk {found_index} of intent {found_id:x}, not of {id:x}")).into()
        );
    }
    // Every row takes at least 5 bytes: a count beyond that is a lie, not an allocation.
    if count as usize > (body.len() - HEADER) / 5 {
        return Err(malformed(format!("{count} rows in {} bytes", body.len())).into());
    }
    let mut rows = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let len = r.u32()? as usize;
        let row_id = std::str::from_utf8(r.take(len)?).map_err(|_| malformed("id is not UTF-8".into()))?;
        let value = match r.take(1)?[0] {
            0 => None,
            1 => {
                let len = r.u32()? as usize;
                Some(r.take(len)?.to_vec())
            }
            f => return Err(malformed(format!("row flag {f}")).into()),
        };
        rows.push((row_id.to_owned(), value));
    }
    if r.at != body.len() {
        return Err(malformed(format!("{} bytes after the last row", body.len() - r.at)).into());
    }
    Ok(rows)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end =
            self.at.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or(DecodeError::Truncated {
                needed: (self.at as u64).saturating_add(n as u64),
                available: self.bytes.len() as u64,
            })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn rows(n: usize) -> Vec<Row> {
        (0..n).map(|i| (format!("node-{i}"), (i % 3 != 0).then(|| vec![i as u8; i % 40]))).collect()
    }

    #[test]
    fn chunks_round_trip_within_their_budget() {
        for (n, budget) in [(0, 200), (1, 200), (50, 200), (500, 4_000), (7, 1 << 20)] {
            let input = rows(n);
            let chunks = encode(7, &input, budget);
            let mut out = Vec::new();
            for (i, c) in chunks.iter().enumerate() {
                assert!(c.len() <= budget, "{} bytes", c.len());
                out.extend(decode(c, 7, i as u32).unwrap());
            }
            assert_eq!(out, input);
            assert_eq!(chunks.is_empty(), n == 0);
        }
        // A row larger than the budget stands alone.
        let big = vec![("big".to_owned(), Some(vec![1; 500])), ("small".to_owned(), None)];
        assert_eq!(encode(1, &big, 100).len(), 2);
    }

    #[test]
    fn damaged_or_foreign_chunks_are_refused() {
        let chunk = encode(7, &rows(20), 1 << 20).remove(0);
        assert!(matches!(decode(&chunk, 8, 0), Err(Error::Decode(DecodeError::Malformed(_)))));
        assert!(matches!(decode(&chunk, 7, 1), Err(Error::Decode(DecodeError::Malformed(_)))));
        for i in 0..chunk.len() {
            let mut bad = chunk.clone();
            bad[i] ^= 0x40;
            assert!(matches!(decode(&bad, 7, 0), Err(Error::Decode(_))), "byte {i}");
        }
        for n in 0..chunk.len() {
            assert!(matches!(decode(&chunk[..n], 7, 0), Err(Error::Decode(_))), "length {n}");
        }
        // A lying row count under a valid checksum is refused without allocating for it.
        let mut lie = chunk[..chunk.len() - CHECKSUM].to_vec();
        lie[17..21].copy_from_slice(&u32::MAX.to_le_bytes());
        seal_raw(&mut lie);
        assert!(matches!(decode(&lie, 7, 0), Err(Error::Decode(DecodeError::Malformed(_)))));
    }

    fn seal_raw(body: &mut Vec<u8>) {
        let sum = xxhash_rust::xxh3::xxh3_64(body);
        body.extend_from_slice(&sum.to_le_bytes());
    }
}
