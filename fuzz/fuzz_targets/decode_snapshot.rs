//! Fuzzes `decode_snapshot` (envelope and legacy map): failures must be typed, and whatever it accepts must survive encode → decode unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vshard_ghosts::{Error, StubRecord, TableConfig, codec};

fn sorted(records: impl Iterator<Item = StubRecord>) -> Vec<StubRecord> {
    let mut v: Vec<_> = records.collect();
    v.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    v
}

fuzz_target!(|data: &[u8]| {
    let config = TableConfig::default();
    let table = match codec::decode_snapshot(data, 0, &config) {
        Ok(t) => t,
        Err(Error::Decode(_)) => return,
        Err(other) => panic!("decode failed without a DecodeError: {other:?}"),
    };
    let bytes = codec::encode_snapshot(&table).expect("a decoded table encodes");
    let back = codec::decode_snapshot(&bytes, 0, &config).expect("an encoded table decodes");
    assert_eq!(back.applied_seq(), table.applied_seq());
    assert_eq!(sorted(back.records()), sorted(table.records()));
});
