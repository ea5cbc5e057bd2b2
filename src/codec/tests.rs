//! Unit tests of the codec: round trips, the seed's bytes, and hostile lengths.

use super::*;
use crate::ids::{Epoch, ShardId};
use crate::stub::StubRecord;

fn cfg() -> TableConfig {
    TableConfig::default()
}

fn sample() -> GhostTable {
    let mut t = GhostTable::new(ShardId(3), cfg()).unwrap();
    for i in 0..50u32 {
        t.insert(
            &format!("node-{i:08}"),
            ShardId((i % 7 + 4) as u16),
            i,
            Epoch(u64::from(i) * 3),
            1_000 + u64::from(i),
        )
        .unwrap();
    }
    t.apply_batch(Some(77), &crate::EdgeEvents::new());
    t
}

#[test]
fn snapshot_round_trips() {
    let t = sample();
    let bytes = encode_snapshot(&t).unwrap();
    let back = decode_snapshot(&bytes, ShardId(3), &cfg()).unwrap();
    assert_eq!(back.applied_seq(), Some(77));
    let mut a: Vec<_> = t.records().collect();
    let mut b: Vec<_> = back.records().collect();
    a.sort_by(|x, y| x.node_id.cmp(&y.node_id));
    b.sort_by(|x, y| x.node_id.cmp(&y.node_id));
    assert_eq!(a, b);
    assert!(!back.has_changes(), "a loaded table owes the store nothing");
}

#[test]
fn empty_snapshot_is_not_empty_bytes() {
    let t = GhostTable::new(ShardId(0), cfg()).unwrap();
    let bytes = encode_snapshot(&t).unwrap();
    assert!(bytes.len() > envelope::HEADER_LEN);
    assert!(decode_snapshot(&bytes, ShardId(0), &cfg()).unwrap().is_empty());
    assert!(matches!(
        decode_snapshot(&[], ShardId(0), &cfg()),
        Err(Error::Decode(DecodeError::Truncated { .. }))
    ));
}

#[test]
fn stub_round_trips() {
    let r = StubRecord {
        node_id: "n".into(),
        target_shard: 65535,
        refcount: u32::MAX,
        created_at_ms: u64::MAX,
        epoch: 9,
        hold_until_ms: u64::MAX,
        tombstone: true,
        seq: 0,
    };
    let bytes = encode_stub(&r).unwrap();
    assert_eq!(decode_stub(&bytes, &cfg()).unwrap(), r);
    assert!(matches!(
        decode_snapshot(&bytes, ShardId(0), &cfg()),
        Err(Error::Decode(DecodeError::WrongKind { .. }))
    ));
}

#[test]
fn seed_bytes_load() {
    let bytes = include_bytes!("../../tests/fixtures/seed-v0-1000.msgpack");
    let t = decode_snapshot(bytes, ShardId(2000), &cfg()).unwrap();
    assert_eq!(t.len(), 1000);
    for i in [0usize, 1, 999, 512] {
        let g = t.get(&format!("node-{i}")).unwrap();
        assert_eq!(
            (g.target_shard.get(), g.refcount, g.epoch.get()),
            ((i % 1024) as u16, (i % 7 + 1) as u32, 0)
        );
    }
    assert_eq!(t.applied_seq(), None);
    let empty = include_bytes!("../../tests/fixtures/seed-v0-empty.msgpack");
    assert!(decode_snapshot(empty, ShardId(0), &cfg()).unwrap().is_empty());
}

#[test]
fn truncated_seed_bytes_are_an_error() {
    let bytes = include_bytes!("../../tests/fixtures/seed-v0-1000.msgpack");
    for cut in [1, 2, 3, 100, bytes.len() - 1] {
        assert!(decode_snapshot(&bytes[..cut], ShardId(0), &cfg()).is_err(), "cut at {cut}");
    }
}

/// Builds a sealed snapshot around a hand-written payload.
fn sealed(payload: &[u8]) -> Vec<u8> {
    envelope::seal(Kind::Snapshot, payload)
}

#[test]
fn hostile_counts_are_rejected_before_allocation() {
    // [nil, array32 of 2^32-1 stubs] with no stubs behind it.
    let p = [0x92, 0xc0, 0xdd, 0xff, 0xff, 0xff, 0xff];
    let e = decode_snapshot(&sealed(&p), ShardId(0), &cfg()).unwrap_err();
    assert!(matches!(e, Error::Decode(DecodeError::LimitExceeded { what: "stub count", .. })), "{e}");
    let p = [0x92, 0xc0, 0xdd, 0x00, 0x10, 0x00, 0x00];
    let e = decode_snapshot(&sealed(&p), ShardId(0), &cfg()).unwrap_err();
    assert!(matches!(e, Error::Decode(DecodeError::Truncated { .. })), "{e}");
    // Legacy map32 declaring 2^31 entries.
    let e = decode_snapshot(&[0xdf, 0x80, 0, 0, 0], ShardId(0), &cfg()).unwrap_err();
    assert!(matches!(e, Error::Decode(DecodeError::LimitExceeded { .. })), "{e}");
}

#[test]
fn ids_are_bounded() {
    let small = TableConfig { max_node_id_len: 4, ..cfg() };
    let r = StubRecord {
        node_id: "toolong".into(),
        target_shard: 1,
        refcount: 1,
        created_at_ms: 0,
        epoch: 0,
        hold_until_ms: 0,
        tombstone: false,
        seq: 0,
    };
    let e = decode_stub(&encode_stub(&r).unwrap(), &small).unwrap_err();
    assert!(matches!(e, Error::Decode(DecodeError::LimitExceeded { what: "node id length", .. })));
    // A str32 header claiming 4 GiB of id.
    let p = [0x95, 0xdb, 0xff, 0xff, 0xff, 0xff];
    assert!(decode_stub(&envelope::seal(Kind::Stub, &p), &cfg()).is_err());
}

#[test]
fn duplicate_ids_are_malformed() {
    let mut p = vec![0x92, 0xc0, 0x92];
    for _ in 0..2 {
        p.extend_from_slice(&[0x95, 0xa1, b'x', 1, 1, 0, 0]);
    }
    let e = decode_snapshot(&sealed(&p), ShardId(0), &cfg()).unwrap_err();
    assert!(matches!(e, Error::Decode(DecodeError::Malformed(_))), "{e}");
}

#[test]
fn wrong_shapes_are_malformed() {
    for p in [
        &[0x91, 0xc0][..],
        &[0x92, 0xc0, 0x91, 0x94, 0xa1, b'x', 1, 1, 0],
        &[0x92, 0xa1, b'x', 0x90],
        &[0x92, 0xc0, 0x90, 0xc0],
    ] {
        let e = decode_snapshot(&sealed(p), ShardId(0), &cfg()).unwrap_err();
        assert!(matches!(e, Error::Decode(DecodeError::Malformed(_))), "{p:02x?}: {e}");
    }
}

/// The direct encoder writes exactly what zerompk's writer wrote before it, at
/// every boundary of every form, so old and new bytes are interchangeable.
#[test]
fn direct_encoder_matches_zerompk() {
    struct Row<'a>(StubRef<'a>);
    impl zerompk::ToMessagePack for Row<'_> {
        fn write<W: zerompk::Write>(&self, w: &mut W) -> zerompk::Result<()> {
            write_stub(w, self.0)
        }
    }
    let long: String = "x".repeat(70_000);
    let ids = ["", "a", &long[..31], &long[..32], &long[..255], &long[..256], &long[..65_535], &long[..]];
    let nums = [0u64, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x1_0000, 0xffff_ffff, 0x1_0000_0000, u64::MAX];
    for (k, id) in ids.iter().enumerate() {
        for (j, &n) in nums.iter().enumerate() {
            let stub = StubRef {
                node_id: id,
                target_shard: n as u16,
                refcount: n as u32,
                created_at_ms: n,
                epoch: nums[(j + 3) % nums.len()],
                hold_until_ms: nums[(j + k) % nums.len()],
                tombstone: j % 2 == 0,
                seq: 0,
            };
            let mut ours = Vec::new();
            put::stub_id(&mut ours, id.as_bytes(), stub);
            assert_eq!(ours, zerompk::to_msgpack_vec(&Row(stub)).unwrap(), "{} {n}", id.len());
            // A row appended after others is the row alone, whole.
            let mut rows = b"before".to_vec();
            append_stub_ref(&mut rows, stub);
            assert_eq!(rows[6..], encode_stub_ref(stub).unwrap()[..]);
            let wide = TableConfig { max_node_id_len: usize::MAX, ..TableConfig::default() };
            assert_eq!(decode_stub_ref(&rows[6..], &wide).unwrap(), stub);
            let mut v = Vec::new();
            put::uint(&mut v, n);
            assert_eq!(v, zerompk::to_msgpack_vec(&n).unwrap());
        }
    }
    struct Len(usize);
    impl zerompk::ToMessagePack for Len {
        fn write<W: zerompk::Write>(&self, w: &mut W) -> zerompk::Result<()> {
            w.write_array_len(self.0)
        }
    }
    for n in [0usize, 15, 16, 0xffff, 0x1_0000] {
        let mut ours = Vec::new();
        put::array_len(&mut ours, n);
        assert_eq!(ours, zerompk::to_msgpack_vec(&Len(n)).unwrap(), "array of {n}");
    }
    // The snapshot as the generic writer wrote it before.
    struct Snapshot<'a>(&'a GhostTable);
    impl zerompk::ToMessagePack for Snapshot<'_> {
        fn write<W: zerompk::Write>(&self, w: &mut W) -> zerompk::Result<()> {
            w.write_array_len(2)?;
            match self.0.applied_seq() {
                Some(seq) => w.write_u64(seq)?,
                None => w.write_nil()?,
            }
            w.write_array_len(self.0.row_count())?;
            for row in self.0.rows() {
                write_stub(w, row)?;
            }
            Ok(())
        }
    }
    let mut t = sample();
    t.reclaim("node-00000003", Epoch(99), 5).unwrap();
    for t in [&t, &GhostTable::new(ShardId(1), cfg()).unwrap()] {
        let theirs = zerompk::to_msgpack_vec(&Snapshot(t)).unwrap();
        assert_eq!(encode_snapshot(t).unwrap(), envelope::seal(envelope::Kind::Snapshot, &theirs));
    }
}

/// A reused buffer holds exactly what a fresh one would, whatever it held
/// before, and keeps its allocation when it is large enough.
#[test]
fn encode_into_a_used_buffer_writes_the_same_bytes_in_place() {
    let mut t = GhostTable::new(ShardId(0), cfg()).unwrap();
    for i in 0..100 {
        t.insert(&format!("n{i}"), ShardId(1), 1 + i, Epoch(1), 5).unwrap();
    }
    let mut buf = vec![0xAB; 64 * 1024];
    let at = buf.as_ptr();
    encode_snapshot_into(&t, &mut buf).unwrap();
    assert_eq!(buf, encode_snapshot(&t).unwrap());
    assert_eq!(buf.as_ptr(), at);
    t.edge_added("n3");
    encode_snapshot_into(&t, &mut buf).unwrap();
    assert_eq!(buf, encode_snapshot(&t).unwrap());
    let back = decode_snapshot(&buf, ShardId(0), &cfg()).unwrap();
    assert_eq!(back.get("n3").map(|g| g.refcount), Some(5));
}
