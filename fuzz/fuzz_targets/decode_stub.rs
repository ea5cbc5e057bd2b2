//! Fuzzes `decode_stub`: failures must be typed, and whatever it accepts must survive encode → decode unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vshard_ghosts::{Error, TableConfig, codec};

fuzz_target!(|data: &[u8]| {
    let config = TableConfig::default();
    let record = match codec::decode_stub(data, &config) {
        Ok(r) => r,
        Err(Error::Decode(_)) => return,
        Err(other) => panic!("decode failed without a DecodeError: {other:?}"),
    };
    let bytes = codec::encode_stub(&record).expect("a decoded stub encodes");
    assert_eq!(codec::decode_stub(&bytes, &config).expect("an encoded stub decodes"), record);
});
