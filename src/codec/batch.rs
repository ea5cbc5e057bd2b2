//! Commit-log records: one store commit (every shard's changes) as MessagePack in the envelope.
//!
//! Payload: an array of sections, each `[shard, bin]`, where the bin holds
//! `[applied_seq | nil, [removed id...], [stub...]]` (stubs as in a snapshot).
//! Nesting each shard's changes in a bin lets a load skip other shards' parts
//! in O(1): the envelope checksum still covers the whole record, so corruption
//! anywhere fails every load, while a shard's own part is decoded (and its ids
//! checked against the loading table's limits) only by that shard's loads and
//! by checkpoints.

use super::envelope::{self, Kind};
use super::{check_count, encode_err, expect_array, expect_end, malformed, read_id, read_stub, write_stub};
use crate::config::TableConfig;
use crate::error::{Error, Result};
use crate::stub::StubRef;
use crate::table::ChangeSet;
use crate::table::ShardChanges;
use zerompk::{Read, SliceReader, ToMessagePack, Write};

/// Smallest section: fixarray, fixint shard, bin8 header, and a bin of four bytes
/// (fixarray, nil, two empty fixarrays).
const MIN_SECTION_BYTES: usize = 8;
/// Smallest removal: a 1-byte fixstr.
const MIN_REMOVAL_BYTES: usize = 1;
/// Smallest stub, as in [`super::MIN_STUB_BYTES`].
const MIN_STUB_BYTES: usize = super::MIN_STUB_BYTES;

/// One shard's changes in a record, ids still borrowed from the record's bytes.
#[derive(Debug)]
pub(crate) struct Section<'a> {
    pub(crate) applied_seq: Option<u64>,
    pub(crate) removals: Vec<&'a str>,
    pub(crate) upserts: Vec<StubRef<'a>>,
}

/// Encodes a whole commit as one log record.
///
/// Ids that no table could hold (longer than `u16::MAX` bytes) are refused
/// here: written to the log they would make every checkpoint fail. The empty
/// id is loggable: a table loaded from the seed's bytes may hold it.
pub(crate) fn encode_batch(batch: &[ShardChanges]) -> Result<Vec<u8>> {
    let mut sections = Vec::with_capacity(batch.len());
    for sc in batch {
        let c = &sc.changes;
        let ids = c.removals().chain(c.upserts().map(|r| r.node_id));
        for id in ids {
            if id.len() > u16::MAX as usize {
                return Err(Error::encode(format!("node id of length {} cannot be logged", id.len()), None));
            }
        }
        sections.push((sc.shard.get(), zerompk::to_msgpack_vec(&SectionPayload(c)).map_err(encode_err)?));
    }
    let payload = zerompk::to_msgpack_vec(&RecordPayload(&sections)).map_err(encode_err)?;
    Ok(envelope::seal(Kind::CommitLog, &payload))
}

/// Checks a record's envelope and splits it into `(shard, section bytes)`
/// pairs, in commit order, without decoding any section.
pub(crate) fn open_batch(bytes: &[u8]) -> Result<Vec<(u16, &[u8])>> {
    let payload = envelope::open(bytes, Kind::CommitLog)?;
    let mut r = SliceReader::new(payload);
    let n = r.read_array_len().map_err(malformed)?;
    if n > payload.len() / MIN_SECTION_BYTES {
        return Err(malformed(format!("{n} sections cannot fit in {} bytes", payload.len())));
    }
    let mut sections = Vec::with_capacity(n);
    for _ in 0..n {
        expect_array(&mut r, 2, "log section")?;
        let shard = r.read_u16().map_err(malformed)?;
        let section = match r.read_binary().map_err(malformed)? {
            std::borrow::Cow::Borrowed(b) => b,
            // A slice reader always borrows; anything else would be a new zerompk.
            std::borrow::Cow::Owned(_) => return Err(malformed("log section not borrowable")),
        };
        sections.push((shard, section));
    }
    expect_end(r)?;
    Ok(sections)
}

/// Decodes one section returned by [`open_batch`], checking ids against `config`.
pub(crate) fn decode_section<'a>(bytes: &'a [u8], config: &TableConfig) -> Result<Section<'a>> {
    let mut r = SliceReader::new(bytes);
    expect_array(&mut r, 3, "log section")?;
    let applied_seq: Option<u64> = r.read_option().map_err(malformed)?;
    let n = r.read_array_len().map_err(malformed)?;
    check_count(n, bytes.len(), MIN_REMOVAL_BYTES, config)?;
    let mut removals = Vec::with_capacity(n);
    for _ in 0..n {
        removals.push(read_id(&mut r, config)?);
    }
    let n = r.read_array_len().map_err(malformed)?;
    check_count(n, bytes.len(), MIN_STUB_BYTES, config)?;
    let mut upserts = Vec::with_capacity(n);
    for _ in 0..n {
        upserts.push(read_stub(&mut r, config)?);
    }
    expect_end(r)?;
    Ok(Section { applied_seq, removals, upserts })
}

struct RecordPayload<'a>(&'a [(u16, Vec<u8>)]);

impl ToMessagePack for RecordPayload<'_> {
    fn write<W: Write>(&self, w: &mut W) -> zerompk::Result<()> {
        w.write_array_len(self.0.len())?;
        for (shard, section) in self.0 {
            w.write_array_len(2)?;
            w.write_u16(*shard)?;
            w.write_binary(section)?;
        }
        Ok(())
    }
}

struct SectionPayload<'a>(&'a ChangeSet);

impl ToMessagePack for SectionPayload<'_> {
    fn write<W: Write>(&self, w: &mut W) -> zerompk::Result<()> {
        let c = self.0;
        w.write_array_len(3)?;
        match c.applied_seq() {
            Some(seq) => w.write_u64(seq)?,
            None => w.write_nil()?,
        }
        w.write_array_len(c.removals().len())?;
        for id in c.removals() {
            w.write_string(id)?;
        }
        w.write_array_len(c.upserts().len())?;
        for s in c.upserts() {
            write_stub(w, s)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DecodeError;
    use crate::ids::ShardId;
    use crate::stub::StubRecord;

    /// Decodes a whole record back into the batch that [`encode_batch`] wrote.
    fn decode_batch(bytes: &[u8], config: &TableConfig) -> Result<Vec<ShardChanges>> {
        open_batch(bytes)?
            .into_iter()
            .map(|(shard, section)| {
                let s = decode_section(section, config)?;
                Ok(ShardChanges {
                    shard: ShardId(shard),
                    changes: ChangeSet::from_parts(s.upserts, s.removals, s.applied_seq),
                })
            })
            .collect()
    }

    #[test]
    fn logged_stubs_encode_as_rows_do() {
        let r = rec("node-1", 4);
        let bytes = encode_batch(&[ShardChanges {
            shard: ShardId(1),
            changes: ChangeSet::from_parts([(&r).into()], [], None),
        }])
        .unwrap();
        let sections = open_batch(&bytes).unwrap();
        let section = decode_section(sections[0].1, &cfg()).unwrap();
        let row = crate::codec::encode_stub_ref(section.upserts[0]).unwrap();
        assert_eq!(row, crate::codec::encode_stub(&r).unwrap());
    }

    fn cfg() -> TableConfig {
        TableConfig::default()
    }

    fn rec(id: &str, target: u16) -> StubRecord {
        StubRecord {
            node_id: id.into(),
            target_shard: target,
            refcount: 7,
            created_at_ms: 1 << 40,
            epoch: 9,
            hold_until_ms: 0,
            tombstone: false,
            seq: 0,
        }
    }

    fn sample() -> Vec<ShardChanges> {
        let changes = |upserts: Vec<StubRecord>, removals: &[&str], applied_seq| {
            ChangeSet::from_parts(upserts.iter().map(StubRef::from), removals.iter().copied(), applied_seq)
        };
        vec![
            ShardChanges {
                shard: ShardId(0),
                changes: changes(vec![rec("a", 1), rec("b", 2)], &["a", "z"], Some(5)),
            },
            ShardChanges { shard: ShardId(u16::MAX), changes: changes(vec![], &[], None) },
            ShardChanges {
                shard: ShardId(3),
                changes: changes(vec![rec(&"x".repeat(300), 4)], &[], Some(u64::MAX)),
            },
        ]
    }

    fn decode_err(bytes: &[u8], config: &TableConfig) -> DecodeError {
        match decode_batch(bytes, config) {
            Err(Error::Decode(e)) => e,
            other => panic!("expected a decode error, got {other:?}"),
        }
    }

    #[test]
    fn batch_round_trips_and_sections_split_without_decoding() {
        let batch = sample();
        let bytes = encode_batch(&batch).unwrap();
        assert_eq!(decode_batch(&bytes, &cfg()).unwrap(), batch);
        let shards: Vec<u16> = open_batch(&bytes).unwrap().iter().map(|s| s.0).collect();
        assert_eq!(shards, [0, u16::MAX, 3]);
        assert_eq!(decode_batch(&encode_batch(&[]).unwrap(), &cfg()).unwrap(), vec![]);
    }

    #[test]
    fn unloggable_ids_are_refused_when_encoding() {
        let id = "x".repeat(u16::MAX as usize + 1);
        let mut batch = sample();
        batch[0].changes.push_upsert((&rec(&id, 1)).into());
        assert!(matches!(encode_batch(&batch), Err(Error::Encode { .. })));
        let mut batch = sample();
        batch[2].changes.push_removal(&id);
        assert!(matches!(encode_batch(&batch), Err(Error::Encode { .. })));
    }

    #[test]
    fn envelope_faults_are_typed() {
        let bytes = encode_batch(&sample()).unwrap();
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(decode_err(&flipped, &cfg()), DecodeError::ChecksumMismatch { .. }));
        assert!(matches!(decode_err(&bytes[..bytes.len() - 3], &cfg()), DecodeError::Truncated { .. }));
        let stub = crate::codec::encode_stub(&rec("a", 1)).unwrap();
        assert!(matches!(decode_err(&stub, &cfg()), DecodeError::WrongKind { expected: 3, found: 2 }));
        assert!(matches!(decode_err(b"", &cfg()), DecodeError::Truncated { .. }));
    }

    #[test]
    fn hostile_payloads_behind_a_valid_checksum_are_typed_errors() {
        let seal = |p: &[u8]| envelope::seal(Kind::CommitLog, p);
        // Section count far beyond the bytes present: refused before allocating.
        let huge = seal(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(decode_err(&huge, &cfg()), DecodeError::Malformed(_)));
        // A bin that claims more bytes than remain.
        let short_bin = seal(&[0x91, 0x92, 0x01, 0xc4, 0x40, 0x93, 0xc0, 0x90, 0x90, 0, 0, 0, 0]);
        assert!(matches!(decode_err(&short_bin, &cfg()), DecodeError::Malformed(_)));
        // Removal count beyond the section's bytes.
        let section = [0x93, 0xc0, 0xdd, 0x00, 0x10, 0x00, 0x00, 0x90];
        let mut p = vec![0x91, 0x92, 0x01, 0xc4, section.len() as u8];
        p.extend_from_slice(&section);
        assert!(matches!(decode_err(&seal(&p), &cfg()), DecodeError::Truncated { .. }));
        // An id that is not a string, and trailing bytes after a section or the
        // payload. (The empty id is an id: the seed's format allowed it.)
        for section in [&[0x93, 0xc0, 0x91, 0x01, 0x90][..], &[0x93, 0xc0, 0x90, 0x90, 0x00]] {
            let mut p = vec![0x91, 0x92, 0x01, 0xc4, section.len() as u8];
            p.extend_from_slice(section);
            assert!(matches!(decode_err(&seal(&p), &cfg()), DecodeError::Malformed(_)), "{section:x?}");
        }
        let mut p = vec![0x91, 0x92, 0x01, 0xc4, 4, 0x93, 0xc0, 0x90, 0x90];
        assert_eq!(decode_batch(&seal(&p), &cfg()).unwrap().len(), 1);
        p.push(0xc0);
        assert!(matches!(decode_err(&seal(&p), &cfg()), DecodeError::Malformed(_)));
    }

    #[test]
    fn ids_are_checked_against_the_loading_tables_limit() {
        let bytes = encode_batch(&sample()).unwrap();
        let tight = TableConfig { max_node_id_len: 100, ..cfg() };
        assert!(matches!(decode_err(&bytes, &tight), DecodeError::LimitExceeded { .. }));
        // Splitting alone checks nothing inside a section: shard 0's part still decodes.
        let sections = open_batch(&bytes).unwrap();
        assert_eq!(decode_section(sections[0].1, &tight).unwrap().upserts.len(), 2);
    }
}
