//! Hostile-input properties of the decoders: random and mutated bytes never panic and fail only with typed errors.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use std::collections::HashSet;
use std::time::{Duration, Instant};
#[allow(dead_code)] // each test file uses a different part of it
mod support;

use support::cases;
use vshard_ghosts::store::StubRecord;
use vshard_ghosts::table::GhostTable;
use vshard_ghosts::{DecodeError, Error, ShardId, TableConfig, codec};

const SHARD: ShardId = ShardId(0);
const FIXTURE_1000: &[u8] = include_bytes!("fixtures/seed-v0-1000.msgpack");
const FIXTURE_EMPTY: &[u8] = include_bytes!("fixtures/seed-v0-empty.msgpack");

/// The envelope layout from DESIGN.md: magic, version, kind, reserved, length, xxh3.
/// Re-sealing lets mutated payloads get past the checksum and reach the parser.
const MAGIC: &[u8; 4] = b"VSGH";
const HEADER_LEN: usize = 24;
const KIND_SNAPSHOT: u8 = 1;
const KIND_STUB: u8 = 2;

fn seal(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&[1, kind, 0, 0]);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn sorted(records: impl Iterator<Item = StubRecord>) -> Vec<StubRecord> {
    let mut v: Vec<_> = records.collect();
    v.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    v
}

/// Decodes `bytes` as a snapshot. Failure must be a typed decode error; success
/// must be a table within the limits that survives encode → decode unchanged.
fn try_snapshot(bytes: &[u8], config: &TableConfig) -> Result<bool, TestCaseError> {
    let t = match codec::decode_snapshot(bytes, SHARD, config) {
        Ok(t) => t,
        Err(Error::Decode(_)) => return Ok(false),
        Err(other) => {
            return Err(TestCaseError::fail(format!(
                "snapshot decode failed without a DecodeError: {other:?}"
            )));
        }
    };
    prop_assert!(t.len() <= config.max_stubs);
    let mut ids = HashSet::new();
    for (id, _) in t.iter() {
        prop_assert!(id.len() <= config.max_node_id_len);
        prop_assert!(ids.insert(id.to_owned()), "duplicate id {:?} accepted", id);
    }
    prop_assert!(!t.has_changes());
    let again = codec::encode_snapshot(&t).unwrap();
    let back = codec::decode_snapshot(&again, SHARD, config).unwrap();
    prop_assert_eq!(sorted(back.records()), sorted(t.records()));
    prop_assert_eq!(back.applied_seq(), t.applied_seq());
    Ok(true)
}

/// [`try_snapshot`] for a single stub.
fn try_stub(bytes: &[u8], config: &TableConfig) -> Result<bool, TestCaseError> {
    let r = match codec::decode_stub(bytes, config) {
        Ok(r) => r,
        Err(Error::Decode(_)) => return Ok(false),
        Err(other) => {
            return Err(TestCaseError::fail(format!("stub decode failed without a DecodeError: {other:?}")));
        }
    };
    prop_assert!(r.node_id.len() <= config.max_node_id_len);
    let again = codec::encode_stub(&r).unwrap();
    prop_assert_eq!(codec::decode_stub(&again, config).unwrap(), r);
    Ok(true)
}

// ---------------------------------------------------------------------------
// The seed's bare-map format, written by hand (the crate only reads it)
// ---------------------------------------------------------------------------

fn mp_uint(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0x7f => out.push(v as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, v as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(v as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(v as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

fn mp_str(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
    match n {
        0..=31 => out.push(0xa0 | n as u8),
        32..=0xff => out.extend_from_slice(&[0xd9, n as u8]),
        0x100..=0xffff => {
            out.push(0xda);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdb);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(s.as_bytes());
}

/// What the seed's `to_bytes` wrote: `node_id -> [target_shard, refcount, created_at_ms]`.
fn legacy(records: &[StubRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    let n = records.len();
    match n {
        0..=15 => out.push(0x80 | n as u8),
        16..=0xffff => {
            out.push(0xde);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdf);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
    for r in records {
        mp_str(&mut out, &r.node_id);
        out.push(0x93);
        mp_uint(&mut out, u64::from(r.target_shard));
        mp_uint(&mut out, u64::from(r.refcount));
        mp_uint(&mut out, r.created_at_ms);
    }
    out
}

// ---------------------------------------------------------------------------
// Seeds and mutations
// ---------------------------------------------------------------------------

fn node_id() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9:_-]{1,12}",
        1 => vec(any::<char>(), 1..40).prop_map(|cs| cs.into_iter().collect()),
    ]
}

fn records(max: usize) -> impl Strategy<Value = Vec<StubRecord>> {
    vec((node_id(), any::<u16>(), any::<u32>(), any::<u64>(), any::<u64>()), 0..max).prop_map(|rows| {
        let mut seen = HashSet::new();
        rows.into_iter()
            .filter(|row| seen.insert(row.0.clone()))
            .map(|(node_id, target_shard, refcount, created_at_ms, epoch)| StubRecord {
                node_id,
                target_shard,
                refcount,
                created_at_ms,
                epoch,
                hold_until_ms: if refcount == 0 { created_at_ms } else { 0 },
                tombstone: false,
                seq: 0,
            })
            .collect()
    })
}

fn table_of(records: Vec<StubRecord>, applied_seq: Option<u64>) -> GhostTable {
    GhostTable::from_records(SHARD, TableConfig::default(), records, applied_seq).unwrap()
}

/// Valid snapshot envelopes: small random tables, and the 1000-stub fixture re-encoded.
fn snapshot_seed() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => (records(8), any::<Option<u64>>())
            .prop_map(|(r, seq)| codec::encode_snapshot(&table_of(r, seq)).unwrap()),
        1 => Just(()).prop_map(|()| {
            let t = codec::decode_snapshot(FIXTURE_1000, SHARD, &TableConfig::default()).unwrap();
            codec::encode_snapshot(&t).unwrap()
        }),
    ]
}

fn stub_seed() -> impl Strategy<Value = Vec<u8>> {
    (node_id(), any::<u16>(), any::<u32>(), any::<u64>(), any::<u64>()).prop_map(
        |(node_id, target_shard, refcount, created_at_ms, epoch)| {
            codec::encode_stub(&StubRecord {
                node_id,
                target_shard,
                refcount,
                created_at_ms,
                epoch,
                hold_until_ms: 0,
                tombstone: false,
                seq: 0,
            })
            .unwrap()
        },
    )
}

fn legacy_seed() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => Just(FIXTURE_1000.to_vec()),
        1 => Just(FIXTURE_EMPTY.to_vec()),
        4 => records(20).prop_map(|r| legacy(&r)),
    ]
}

/// A MessagePack container or string header declaring a large length.
fn huge_header() -> impl Strategy<Value = Vec<u8>> {
    let len = prop_oneof![Just(u32::MAX), Just(0x8000_0000u32), Just(1u32 << 28), any::<u32>()];
    (
        proptest::sample::select(vec![
            0xdcu8, 0xdd, 0xde, 0xdf, 0xd9, 0xda, 0xdb, 0xc4, 0xc5, 0xc6, 0x9f, 0x8f, 0xbf,
        ]),
        len,
    )
        .prop_map(|(marker, n)| {
            let mut h = vec![marker];
            match marker {
                0xd9 | 0xc4 => h.push(n as u8),
                0xdc | 0xde | 0xda | 0xc5 => h.extend_from_slice(&(n as u16).to_be_bytes()),
                0xdd | 0xdf | 0xdb | 0xc6 => h.extend_from_slice(&n.to_be_bytes()),
                _ => {}
            }
            h
        })
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Truncate(Index),
    Extend(Vec<u8>),
    Insert(Index, Vec<u8>),
    /// Overwrites bytes in place, typically with a huge length header.
    Splice(Index, Vec<u8>),
    Remove(Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => vec(any::<u8>(), 1..16).prop_map(Mutation::Extend),
        2 => (any::<Index>(), prop_oneof![huge_header(), vec(any::<u8>(), 1..8)])
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        3 => (any::<Index>(), huge_header()).prop_map(|(i, b)| Mutation::Splice(i, b)),
        1 => (any::<Index>(), 1usize..8).prop_map(|(i, n)| Mutation::Remove(i, n)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        match m {
            Mutation::Insert(i, b) => {
                let at = i.index(len + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Mutation::Extend(b) => bytes.extend_from_slice(b),
            _ if len == 0 => {}
            Mutation::Flip(i, x) => bytes[i.index(len)] ^= x,
            Mutation::Truncate(i) => bytes.truncate(i.index(len)),
            Mutation::Splice(i, b) => {
                let at = i.index(len);
                let end = (at + b.len()).min(len);
                bytes.splice(at..end, b.iter().copied());
            }
            Mutation::Remove(i, n) => {
                let at = i.index(len);
                bytes.drain(at..(at + n).min(len));
            }
        }
    }
    bytes
}

fn prefix() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(vec![]),
        Just(MAGIC.to_vec()),
        (1u8..=2).prop_map(|kind| [&MAGIC[..], &[1, kind, 0, 0]].concat()),
        proptest::sample::select((0x80u8..=0x8f).chain([0xde, 0xdf]).collect::<Vec<_>>())
            .prop_map(|b| vec![b]),
    ]
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn random_bytes_fail_typed(prefix in prefix(), tail in vec(any::<u8>(), 0..256)) {
        let config = TableConfig::default();
        let bytes = [prefix, tail].concat();
        try_snapshot(&bytes, &config)?;
        try_stub(&bytes, &config)?;
    }

    #[test]
    fn random_payloads_behind_a_valid_checksum_fail_typed(payload in vec(any::<u8>(), 0..256)) {
        let config = TableConfig::default();
        try_snapshot(&seal(KIND_SNAPSHOT, &payload), &config)?;
        try_stub(&seal(KIND_STUB, &payload), &config)?;
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn any_flipped_byte_in_an_envelope_is_rejected(
        bytes in prop_oneof![snapshot_seed(), stub_seed()],
        at in any::<Index>(),
        xor in 1u8..=255,
    ) {
        let config = TableConfig::default();
        let mut bad = bytes.clone();
        let at = at.index(bad.len());
        bad[at] ^= xor;
        let err = if bytes[5] == KIND_SNAPSHOT {
            codec::decode_snapshot(&bad, SHARD, &config).map(|_| ())
        } else {
            codec::decode_stub(&bad, &config).map(|_| ())
        };
        // Checksum field and payload: exactly the checksum catches it.
        if at >= 16 {
            prop_assert!(
                matches!(err, Err(Error::Decode(DecodeError::ChecksumMismatch { .. }))),
                "flip at {} gave {:?}", at, err
            );
        } else {
            prop_assert!(matches!(err, Err(Error::Decode(_))), "flip at {} gave {:?}", at, err);
        }
    }

    #[test]
    fn mutated_envelopes_are_rejected(
        bytes in prop_oneof![snapshot_seed(), stub_seed()],
        mutations in vec(mutation(), 1..4),
    ) {
        let config = TableConfig::default();
        let bad = mutate(bytes.clone(), &mutations);
        let ok = (try_snapshot(&bad, &config)?, try_stub(&bad, &config)?);
        // Anything still claiming to be an envelope must match its checksum to load.
        // (A mutation can also turn the bytes into a valid bare legacy map, e.g. [0x80].)
        if bad.starts_with(MAGIC) && bad != bytes {
            prop_assert_eq!(ok, (false, false), "altered envelope accepted");
        }
    }

    #[test]
    fn mutated_payloads_fail_typed_or_round_trip(
        bytes in prop_oneof![snapshot_seed(), stub_seed()],
        mutations in vec(mutation(), 1..4),
    ) {
        let config = TableConfig::default();
        let kind = bytes[5];
        let original = codec::decode_snapshot(&bytes, SHARD, &config).is_ok()
            || codec::decode_stub(&bytes, &config).is_ok();
        prop_assert!(original);
        prop_assert_eq!(&seal(kind, &bytes[HEADER_LEN..]), &bytes, "test's envelope layout is stale");
        let payload = mutate(bytes[HEADER_LEN..].to_vec(), &mutations);
        let resealed = seal(kind, &payload);
        try_snapshot(&resealed, &config)?;
        try_stub(&resealed, &config)?;
    }

    #[test]
    fn mutated_legacy_maps_fail_typed_or_round_trip(
        bytes in legacy_seed(),
        mutations in vec(mutation(), 1..4),
    ) {
        try_snapshot(&mutate(bytes, &mutations), &TableConfig::default())?;
    }

    #[test]
    fn legacy_maps_load_with_epoch_zero(records in records(40)) {
        let t = codec::decode_snapshot(&legacy(&records), SHARD, &TableConfig::default()).unwrap();
        let want = records.into_iter().map(|r| StubRecord { epoch: 0, ..r });
        prop_assert_eq!(sorted(t.records()), sorted(want));
        prop_assert_eq!(t.applied_seq(), None);
        prop_assert!(!t.has_changes());
    }

    #[test]
    fn decoding_enforces_the_configured_limits(
        records in records(12),
        max_node_id_len in 1usize..12,
        max_stubs in 1usize..12,
    ) {
        let config = TableConfig { max_node_id_len, max_stubs, ..TableConfig::default() };
        let long_id = records.iter().any(|r| r.node_id.len() > max_node_id_len);
        let bytes = codec::encode_snapshot(&table_of(records.clone(), None)).unwrap();
        match codec::decode_snapshot(&bytes, SHARD, &config) {
            Ok(t) => prop_assert!(!long_id && t.len() <= max_stubs),
            Err(Error::Decode(DecodeError::LimitExceeded { .. })) => {
                prop_assert!(long_id || records.len() > max_stubs);
            }
            Err(other) => return Err(TestCaseError::fail(format!("{other:?}"))),
        }
        for r in &records {
            let got = codec::decode_stub(&codec::encode_stub(r).unwrap(), &config);
            if r.node_id.len() > max_node_id_len {
                prop_assert!(
                    matches!(got, Err(Error::Decode(DecodeError::LimitExceeded { .. }))),
                    "{:?}", got
                );
            } else {
                prop_assert_eq!(got.as_ref(), Ok(r));
            }
        }
    }

    #[test]
    fn huge_declared_lengths_fail_fast(
        header in huge_header(),
        tail in vec(any::<u8>(), 0..32),
        permissive in any::<bool>(),
    ) {
        // With the permissive limit only the bytes-present bound stands between a
        // declared count and the allocation.
        let config = TableConfig {
            max_stubs: if permissive { u32::MAX as usize } else { TableConfig::default().max_stubs },
            max_node_id_len: u16::MAX as usize,
            ..TableConfig::default()
        };
        let inputs = [
            seal(KIND_SNAPSHOT, &[&[0x92, 0xc0][..], &header, &tail].concat()),
            seal(KIND_STUB, &[&[0x95][..], &header, &tail].concat()),
            [&header[..], &tail].concat(),
        ];
        for bytes in &inputs {
            let started = Instant::now();
            try_snapshot(bytes, &config)?;
            try_stub(bytes, &config)?;
            prop_assert!(started.elapsed() < Duration::from_secs(1), "slow on {:02x?}", bytes);
        }
    }
}

#[test]
fn a_tiny_input_declaring_a_huge_count_fails_before_allocating() {
    use DecodeError::{LimitExceeded, Truncated};
    let default = TableConfig::default();
    let permissive = TableConfig { max_stubs: u32::MAX as usize, ..TableConfig::default() };
    let array32 = |n: u32| seal(KIND_SNAPSHOT, &[&[0x92, 0xc0, 0xdd][..], &n.to_be_bytes()].concat());
    let map32 = |n: u32| [&[0xdf][..], &n.to_be_bytes()].concat();
    let mut huge_envelope = array32(1);
    huge_envelope[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    // `true`: the configured limit must refuse it; `false`: the bytes present must.
    let cases = [
        (array32(u32::MAX), &default, true),
        (array32(u32::MAX), &permissive, false),
        (array32((1 << 28) - 1), &default, false),
        (map32(u32::MAX), &default, true),
        (map32(u32::MAX), &permissive, false),
        (vec![0xde, 0xff, 0xff], &default, false),
        (huge_envelope, &permissive, false),
    ];
    for (bytes, config, over_limit) in cases {
        let started = Instant::now();
        let got = codec::decode_snapshot(&bytes, SHARD, config);
        let elapsed = started.elapsed();
        match got {
            Err(Error::Decode(LimitExceeded { .. })) if over_limit => {}
            Err(Error::Decode(Truncated { .. })) if !over_limit => {}
            other => panic!("{bytes:02x?}: {:?}", other.map(|t| t.len())),
        }
        assert!(elapsed < Duration::from_millis(200), "{bytes:02x?} took {elapsed:?}");
    }
    // A stub whose id declares 4 GiB of text in a 30-byte input.
    let stub = seal(KIND_STUB, &[0x95, 0xdb, 0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(codec::decode_stub(&stub, &default), Err(Error::Decode(_))));
}
