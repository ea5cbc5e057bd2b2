//! Reads the seed's bare MessagePack map, so state written before the envelope still loads.

use super::{check_count, expect_array, expect_end, malformed, read_id};
use crate::config::TableConfig;
use crate::error::{DecodeError, Result};
use crate::ids::ShardId;
use crate::stub::StubRef;
use crate::table::GhostTable;
use zerompk::{Read, SliceReader};

/// Smallest entry: 1-byte fixstr key, fixarray of three fixints.
const MIN_ENTRY_BYTES: usize = 6;

/// The seed wrote a bare map: fixmap (0x80..=0x8f), map16 (0xde) or map32 (0xdf).
pub(super) fn is_legacy(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(0x80..=0x8f | 0xde | 0xdf))
}

pub(super) fn decode(bytes: &[u8], shard: ShardId, config: &TableConfig) -> Result<GhostTable> {
    let mut r = SliceReader::new(bytes);
    let n = r.read_map_len().map_err(truncated_or_malformed(bytes.len()))?;
    check_count(n, bytes.len(), MIN_ENTRY_BYTES, config)?;
    let mut table = GhostTable::with_capacity(shard, config.clone(), n)?;
    for _ in 0..n {
        let id = read_id(&mut r, config)?;
        expect_array(&mut r, 3, "legacy stub")?;
        let target = r.read_u16().map_err(truncated_or_malformed(bytes.len()))?;
        let refcount = r.read_u32().map_err(truncated_or_malformed(bytes.len()))?;
        let created = r.read_u64().map_err(truncated_or_malformed(bytes.len()))?;
        // Legacy ghosts predate move epochs: 0 orders before any real move.
        let stub = StubRef {
            node_id: id,
            target_shard: target,
            refcount,
            created_at_ms: created,
            epoch: 0,
            hold_until_ms: 0,
            tombstone: false,
            seq: 0,
        };
        table.load_stub(stub)?;
    }
    expect_end(r)?;
    table.finish_load(None)?;
    Ok(table)
}

/// Without a checksum, running out of bytes means the input was cut short.
fn truncated_or_malformed(len: usize) -> impl Fn(zerompk::Error) -> crate::Error {
    move |e| match e {
        zerompk::Error::BufferTooSmall => {
            DecodeError::Truncated { needed: len as u64 + 1, available: len as u64 }.into()
        }
        other => malformed(other),
    }
}
