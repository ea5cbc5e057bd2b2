//! Persisted bytes: whole-table snapshots and single stubs, MessagePack inside a
//! versioned, checksummed envelope; plus the seed's bare-map format, read-only.
//!
//! Decoding treats every byte as hostile: declared lengths are checked against
//! the bytes that remain and the configured limits before any allocation, ids
//! are borrowed from the input until accepted, and every failure is a typed
//! [`DecodeError`]. Encoding never yields empty bytes on failure.

pub(crate) mod batch;
mod envelope;
mod legacy;

use crate::config::TableConfig;
use crate::error::{DecodeError, Error, Result};
use crate::ids::ShardId;
use crate::stub::{StubRecord, StubRef};
use crate::table::{GhostTable, TableMemory};
use envelope::Kind;
use zerompk::{Read, SliceReader, Write};

/// Smallest encoding of one stub: fixarray, the empty fixstr, four fixints.
const MIN_STUB_BYTES: usize = 6;

/// Encodes the whole table (stubs and applied sequence number) as a snapshot.
///
/// Written straight into the envelope's buffer by this module's own encoder, which
/// writes exactly the bytes zerompk's writer would (tests compare the two):
/// going through the generic writer and then copying the payload into the
/// envelope cost about three times as much on a million stubs.
pub fn encode_snapshot(table: &GhostTable) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_snapshot_into(table, &mut out)?;
    Ok(out)
}

/// [`encode_snapshot`] into `out`, replacing what it held and keeping its
/// allocation: a host that snapshots a shard again and again writes into
/// memory it has already paid for. In a process that has run a while, a
/// fresh buffer of tens of megabytes is mapped, faulted in page by page and
/// copied as it grows; that cost several times the encoding itself.
pub fn encode_snapshot_into(table: &GhostTable, out: &mut Vec<u8>) -> Result<()> {
    // A snapshot does not carry rows' sequence numbers: a row a torn commit
    // stored ahead of the shard's would lose what it holds, and the resend of
    // its batches would count twice where the snapshot is loaded.
    if let Some(ahead) = table.rows_ahead() {
        return Err(Error::encode(
            format!(
                "{ahead} rows hold batches past the shard's applied sequence number (a commit landed in part): \
                 resend the unacknowledged batches before taking a snapshot"
            ),
            None,
        ));
    }
    let rows = table.row_count();
    out.clear();
    // Room for every row of short ids and small fields; a longer one reallocates.
    out.reserve(envelope::HEADER_LEN + 16 + rows * 48);
    envelope::begin(out);
    put::array_len(out, 2);
    match table.applied_seq() {
        Some(seq) => put::uint(out, seq),
        None => out.push(put::NIL),
    }
    // Tombstones too: a shard handed over must still refuse stale inserts.
    put::array_len(out, rows);
    // Ids as the table holds them: a `&str` of an id kept in place would be
    // checked as UTF-8 again, a fifth of an encode, to write the same bytes.
    for (id, row) in table.rows_as_stored() {
        put::stub_id(out, id, row);
    }
    envelope::finish(Kind::Snapshot, out);
    Ok(())
}

/// Decodes a snapshot into a table for `shard`. Also accepts the seed's bare
/// MessagePack map (`node_id -> [target_shard, refcount, created_at_ms]`), whose
/// stubs get move epoch 0 and no applied sequence number.
pub fn decode_snapshot(bytes: &[u8], shard: ShardId, config: &TableConfig) -> Result<GhostTable> {
    decode_snapshot_reusing(bytes, shard, config, TableMemory::default())
}

/// [`decode_snapshot`] into `memory`, the allocations of a table this process
/// no longer needs ([`GhostTable::into_memory`]): a reload that does not map
/// and fault in its tens of megabytes afresh. On an error the memory is
/// dropped with the partly built table; `bytes` are only read.
pub fn decode_snapshot_reusing(
    bytes: &[u8],
    shard: ShardId,
    config: &TableConfig,
    memory: TableMemory,
) -> Result<GhostTable> {
    if legacy::is_legacy(bytes) {
        drop(memory);
        return legacy::decode(bytes, shard, config);
    }
    let payload = envelope::open(bytes, Kind::Snapshot)?;
    let mut r = SliceReader::new(payload);
    expect_array(&mut r, 2, "snapshot")?;
    let applied_seq: Option<u64> = r.read_option().map_err(malformed)?;
    let n = r.read_array_len().map_err(malformed)?;
    // Rows are ghosts and tombstones, each kind under its own bound.
    let rows =
        TableConfig { max_stubs: config.max_stubs.saturating_add(config.max_tombstones), ..config.clone() };
    check_count(n, payload.len(), MIN_STUB_BYTES, &rows)?;
    let mut table = GhostTable::with_memory(shard, config.clone(), n, memory)?;
    for _ in 0..n {
        table.load_stub(read_stub(&mut r, config)?)?;
    }
    expect_end(r)?;
    table.finish_load(applied_seq)?;
    if table.len() > config.max_stubs {
        let (value, limit) = (table.len() as u64, config.max_stubs as u64);
        return Err(DecodeError::LimitExceeded { what: "stub count", value, limit }.into());
    }
    Ok(table)
}

/// Encodes one stub (the value of a store row).
pub fn encode_stub(record: &StubRecord) -> Result<Vec<u8>> {
    encode_stub_ref(record.into())
}

/// [`encode_stub`] of a borrowed stub.
pub(crate) fn encode_stub_ref(stub: StubRef<'_>) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(envelope::HEADER_LEN + 40 + stub.node_id.len());
    append_stub_ref(&mut out, stub);
    Ok(out)
}

/// [`encode_stub_ref`] appended to `out`: a fold writes many rows from one buffer.
pub(crate) fn append_stub_ref(out: &mut Vec<u8>, stub: StubRef<'_>) {
    append_stub_as(out, stub.node_id, stub);
}

/// [`append_stub_ref`] with the id read from `id`, which must equal
/// `stub.node_id`: a copy the caller holds in cache, where `stub.node_id` may
/// point anywhere.
pub(crate) fn append_stub_as(out: &mut Vec<u8>, id: &str, stub: StubRef<'_>) {
    debug_assert_eq!(id, stub.node_id);
    let start = out.len();
    out.resize(start + envelope::HEADER_LEN, 0);
    put::stub_id(out, id.as_bytes(), stub);
    envelope::finish(Kind::Stub, &mut out[start..]);
}

/// Decodes one stub written by [`encode_stub`].
pub fn decode_stub(bytes: &[u8], config: &TableConfig) -> Result<StubRecord> {
    decode_stub_ref(bytes, config).map(|s| s.to_record())
}

/// [`decode_stub`], the id borrowed from `bytes`: a store's load decodes a
/// million rows without an allocation each.
pub(crate) fn decode_stub_ref<'a>(bytes: &'a [u8], config: &TableConfig) -> Result<StubRef<'a>> {
    let payload = envelope::open(bytes, Kind::Stub)?;
    let mut r = SliceReader::new(payload);
    let stub = read_stub(&mut r, config)?;
    expect_end(r)?;
    Ok(stub)
}

/// A MessagePack encoder for the few shapes a snapshot and a stub row hold,
/// always in the smallest form, as zerompk's writer does.
pub(crate) mod put {
    /// The nil marker.
    pub(crate) const NIL: u8 = 0xc0;

    /// An unsigned integer in its smallest form.
    #[inline]
    pub(crate) fn uint(out: &mut Vec<u8>, v: u64) {
        if v <= 0x7f {
            out.push(v as u8);
        } else if v <= 0xff {
            out.extend_from_slice(&[0xcc, v as u8]);
        } else if v <= 0xffff {
            out.push(0xcd);
            out.extend_from_slice(&(v as u16).to_be_bytes());
        } else if v <= 0xffff_ffff {
            out.push(0xce);
            out.extend_from_slice(&(v as u32).to_be_bytes());
        } else {
            out.push(0xcf);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }

    /// An array header.
    #[inline]
    pub(crate) fn array_len(out: &mut Vec<u8>, n: usize) {
        if n <= 15 {
            out.push(0x90 | n as u8);
        } else if n <= 0xffff {
            out.push(0xdc);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            out.push(0xdd);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }

    /// A string, given as its UTF-8 bytes. Ids are bounded far below 4 GiB
    /// by the table's limits.
    #[inline]
    fn str(out: &mut Vec<u8>, s: &[u8]) {
        let n = s.len();
        if n <= 31 {
            out.push(0xa0 | n as u8);
        } else if n <= 0xff {
            out.extend_from_slice(&[0xd9, n as u8]);
        } else if n <= 0xffff {
            out.push(0xda);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            out.push(0xdb);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        out.extend_from_slice(s);
    }

    /// A stub row, as [`write_stub`](super::write_stub) writes it, its id
    /// read from `id` (the UTF-8 bytes of a string; `s.node_id` is not read).
    /// A row of a short id is built on the stack and appended once: one
    /// capacity check per row instead of one per field.
    #[inline]
    pub(crate) fn stub_id(out: &mut Vec<u8>, id: &[u8], s: super::StubRef<'_>) {
        if id.len() > 31 {
            out.push(0x97);
            str(out, id);
            fields(out, s);
            return;
        }
        // fixarray, fixstr and id, then at most 3 + 5 + 9 + 9 + 9 + 1 bytes.
        let mut b = [0u8; 2 + 31 + 36];
        b[0] = 0x97;
        b[1] = 0xa0 | id.len() as u8;
        b[2..2 + id.len()].copy_from_slice(id);
        let mut n = 2 + id.len();
        n = uint_at(&mut b, n, u64::from(s.target_shard));
        n = uint_at(&mut b, n, u64::from(s.refcount));
        n = uint_at(&mut b, n, s.created_at_ms);
        n = uint_at(&mut b, n, s.epoch);
        n = uint_at(&mut b, n, s.hold_until_ms);
        b[n] = if s.tombstone { 0xc3 } else { 0xc2 };
        out.extend_from_slice(&b[..n + 1]);
    }

    fn fields(out: &mut Vec<u8>, s: super::StubRef<'_>) {
        uint(out, u64::from(s.target_shard));
        uint(out, u64::from(s.refcount));
        uint(out, s.created_at_ms);
        uint(out, s.epoch);
        uint(out, s.hold_until_ms);
        out.push(if s.tombstone { 0xc3 } else { 0xc2 });
    }

    /// [`uint`] into `b` at `at`; returns the end.
    #[inline(always)]
    fn uint_at(b: &mut [u8], at: usize, v: u64) -> usize {
        if v <= 0x7f {
            b[at] = v as u8;
            at + 1
        } else if v <= 0xff {
            b[at] = 0xcc;
            b[at + 1] = v as u8;
            at + 2
        } else if v <= 0xffff {
            b[at] = 0xcd;
            b[at + 1..at + 3].copy_from_slice(&(v as u16).to_be_bytes());
            at + 3
        } else if v <= 0xffff_ffff {
            b[at] = 0xce;
            b[at + 1..at + 5].copy_from_slice(&(v as u32).to_be_bytes());
            at + 5
        } else {
            b[at] = 0xcf;
            b[at + 1..at + 9].copy_from_slice(&v.to_be_bytes());
            at + 9
        }
    }
}

/// A stub is `[id, target, refcount, created_at_ms, epoch, hold_until_ms,
/// tombstone]`. Rows written before holds and tombstones were persisted have
/// the first five only, and still load (no hold, not a tombstone).
fn write_stub<W: Write>(w: &mut W, s: StubRef<'_>) -> zerompk::Result<()> {
    w.write_array_len(7)?;
    w.write_string(s.node_id)?;
    w.write_u16(s.target_shard)?;
    w.write_u32(s.refcount)?;
    w.write_u64(s.created_at_ms)?;
    w.write_u64(s.epoch)?;
    w.write_u64(s.hold_until_ms)?;
    w.write_boolean(s.tombstone)
}

/// Reads a stub, its id still borrowed from the input.
fn read_stub<'a>(r: &mut SliceReader<'a>, config: &TableConfig) -> Result<StubRef<'a>> {
    let n = r.read_array_len().map_err(malformed)?;
    if n != 5 && n != 7 {
        return Err(malformed(format!("stub: expected an array of 5 or 7, found {n}")));
    }
    let node_id = read_id(r, config)?;
    let mut stub = StubRef {
        node_id,
        target_shard: r.read_u16().map_err(malformed)?,
        refcount: r.read_u32().map_err(malformed)?,
        created_at_ms: r.read_u64().map_err(malformed)?,
        epoch: r.read_u64().map_err(malformed)?,
        hold_until_ms: 0,
        tombstone: false,
        seq: 0,
    };
    if n == 7 {
        stub.hold_until_ms = r.read_u64().map_err(malformed)?;
        stub.tombstone = r.read_boolean().map_err(malformed)?;
    }
    Ok(stub)
}

/// Reads an id without allocating and checks it against the configured bound.
fn read_id<'a>(r: &mut SliceReader<'a>, config: &TableConfig) -> Result<&'a str> {
    let id = match r.read_string().map_err(malformed)? {
        std::borrow::Cow::Borrowed(s) => s,
        // A slice reader always borrows; anything else would be a new zerompk.
        std::borrow::Cow::Owned(_) => return Err(malformed("node id not borrowable")),
    };
    // The empty id is accepted: the seed's format allowed it, and a table
    // loaded from the seed's bytes writes it back in ours.
    if id.len() > config.max_node_id_len {
        return Err(DecodeError::LimitExceeded {
            what: "node id length",
            value: id.len() as u64,
            limit: config.max_node_id_len as u64,
        }
        .into());
    }
    Ok(id)
}

fn expect_array(r: &mut SliceReader<'_>, len: usize, what: &str) -> Result<()> {
    let n = r.read_array_len().map_err(malformed)?;
    if n != len {
        return Err(malformed(format!("{what}: expected an array of {len}, found {n}")));
    }
    Ok(())
}

/// Rejects a declared element count that exceeds the limit or that the bytes
/// present could not hold, before anything is reserved for it.
fn check_count(n: usize, bytes: usize, min_each: usize, config: &TableConfig) -> Result<()> {
    if n > config.max_stubs {
        return Err(DecodeError::LimitExceeded {
            what: "stub count",
            value: n as u64,
            limit: config.max_stubs as u64,
        }
        .into());
    }
    if n > bytes / min_each {
        return Err(DecodeError::Truncated {
            needed: (n as u64).saturating_mul(min_each as u64),
            available: bytes as u64,
        }
        .into());
    }
    Ok(())
}

fn expect_end(mut r: SliceReader<'_>) -> Result<()> {
    match r.peek_marker() {
        Err(_) => Ok(()),
        Ok(_) => Err(malformed("trailing data after the payload")),
    }
}

fn malformed(e: impl std::fmt::Display) -> Error {
    DecodeError::Malformed(e.to_string()).into()
}

fn encode_err(e: zerompk::Error) -> Error {
    Error::encode("MessagePack", Some(crate::error::Cause::msg(e.to_string())))
}

#[cfg(test)]
mod tests;
