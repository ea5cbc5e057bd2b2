//! The versioned envelope around every persisted payload: magic, version, kind, length, checksum.

use crate::error::DecodeError;

/// First bytes of every envelope. Chosen so that no MessagePack map (the seed's
/// bare format) can start with it: `V` (0x56) is a positive fixint there.
pub(crate) const MAGIC: [u8; 4] = *b"VSGH";
/// The only format version this build writes and reads.
pub(crate) const FORMAT_VERSION: u8 = 1;
/// magic(4) version(1) kind(1) reserved(2) payload_len(8, LE) xxh3-64(8, LE).
pub(crate) const HEADER_LEN: usize = 24;

/// What an envelope carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    Snapshot = 1,
    Stub = 2,
    /// One store commit: every shard's changes, appended to the store's log.
    CommitLog = 3,
}

/// Starts an envelope in `out` (empty): the header's room, filled by [`finish`]
/// once the payload has been appended, so it is never copied.
pub(crate) fn begin(out: &mut Vec<u8>) {
    debug_assert!(out.is_empty());
    out.resize(HEADER_LEN, 0);
}

/// Ends an envelope started by [`begin`]: everything after the header is the payload.
pub(crate) fn finish(kind: Kind, out: &mut [u8]) {
    let (header, payload) = out.split_at_mut(HEADER_LEN);
    header[..4].copy_from_slice(&MAGIC);
    header[4] = FORMAT_VERSION;
    header[5] = kind as u8;
    header[6..8].copy_from_slice(&[0, 0]);
    header[8..16].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    header[16..24].copy_from_slice(&xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes());
}

pub(crate) fn seal(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(kind as u8);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks the header and checksum and returns the payload. Nothing is
/// allocated; the declared length is compared with the bytes present first.
pub(crate) fn open(bytes: &[u8], kind: Kind) -> Result<&[u8], DecodeError> {
    if bytes.len() < HEADER_LEN {
        if !bytes.is_empty() && !MAGIC.starts_with(&bytes[..bytes.len().min(4)]) {
            return Err(bad_magic(bytes));
        }
        return Err(DecodeError::Truncated { needed: HEADER_LEN as u64, available: bytes.len() as u64 });
    }
    if bytes[..4] != MAGIC {
        return Err(bad_magic(bytes));
    }
    if bytes[4] != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion(bytes[4]));
    }
    if bytes[5] != kind as u8 {
        return Err(DecodeError::WrongKind { expected: kind as u8, found: bytes[5] });
    }
    if bytes[6..8] != [0, 0] {
        return Err(DecodeError::Malformed("reserved header bytes are not zero".into()));
    }
    let declared = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let available = (bytes.len() - HEADER_LEN) as u64;
    if declared > available {
        return Err(DecodeError::Truncated { needed: declared, available });
    }
    if declared < available {
        return Err(DecodeError::Malformed(format!(
            "{} trailing bytes after the payload",
            available - declared
        )));
    }
    let payload = &bytes[HEADER_LEN..];
    let stored = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let computed = xxhash_rust::xxh3::xxh3_64(payload);
    if stored != computed {
        return Err(DecodeError::ChecksumMismatch { stored, computed });
    }
    Ok(payload)
}

pub(crate) fn bad_magic(bytes: &[u8]) -> DecodeError {
    DecodeError::BadMagic { found: bytes[..bytes.len().min(4)].to_vec() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open_round_trips() {
        let sealed = seal(Kind::Stub, b"abc");
        assert_eq!(sealed.len(), HEADER_LEN + 3);
        assert_eq!(open(&sealed, Kind::Stub).unwrap(), b"abc");
    }

    #[test]
    fn every_header_fault_has_its_own_error() {
        let good = seal(Kind::Snapshot, b"payload");
        let mut m = good.clone();
        m[0] = b'X';
        assert!(matches!(open(&m, Kind::Snapshot), Err(DecodeError::BadMagic { .. })));
        let mut v = good.clone();
        v[4] = 9;
        assert_eq!(open(&v, Kind::Snapshot), Err(DecodeError::UnsupportedVersion(9)));
        assert!(matches!(open(&good, Kind::Stub), Err(DecodeError::WrongKind { .. })));
        let mut c = good.clone();
        *c.last_mut().unwrap() ^= 1;
        assert!(matches!(open(&c, Kind::Snapshot), Err(DecodeError::ChecksumMismatch { .. })));
        assert!(matches!(open(&good[..good.len() - 1], Kind::Snapshot), Err(DecodeError::Truncated { .. })));
        assert!(matches!(open(&good[..10], Kind::Snapshot), Err(DecodeError::Truncated { .. })));
        let mut t = good.clone();
        t.push(0);
        assert!(matches!(open(&t, Kind::Snapshot), Err(DecodeError::Malformed(_))));
        let mut huge = good.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(open(&huge, Kind::Snapshot), Err(DecodeError::Truncated { .. })));
    }
}
