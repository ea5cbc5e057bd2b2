//! `EtcdStore`'s key layout under its prefix, and the per-shard metadata value.

use crate::error::{DecodeError, Error, Result};

/// Written once under `{prefix}format`: a prefix holding anything else is not
/// adopted, so that a foreign or future layout is never written over.
pub(super) const FORMAT: &[u8] = b"vshard-ghosts-etcd/1";
/// Version of the metadata value below.
pub(super) const META_VERSION: u8 = 1;
const META_MAGIC: [u8; 4] = *b"VSGM";
/// magic(4) version(1) has_seq(1) seq(8, LE) generation(8, LE) xxh3-64(8, LE).
const META_LEN: usize = 30;

/// Every key of the store, derived from its prefix.
///
/// Shards are zero-padded decimals so that a shard's keys form one range and
/// read well in `etcdctl get --prefix`.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned() }
    }

    pub(super) fn format(&self) -> Vec<u8> {
        format!("{}format", self.prefix).into_bytes()
    }

    /// The shard's ownership record: the owner's id, attached to its lease.
    pub(super) fn owner(&self, shard: u16) -> Vec<u8> {
        format!("{}owner/{shard:05}", self.prefix).into_bytes()
    }

    /// The shard's [`Meta`].
    pub(super) fn meta(&self, shard: u16) -> Vec<u8> {
        format!("{}meta/{shard:05}", self.prefix).into_bytes()
    }

    /// The prefix of the shard's stub rows in one generation.
    pub(super) fn rows(&self, shard: u16, generation: u64) -> Vec<u8> {
        format!("{}rows/{shard:05}/{generation}/", self.prefix).into_bytes()
    }

    /// The key of one stub row.
    pub(super) fn row(&self, shard: u16, generation: u64, node_id: &str) -> Vec<u8> {
        let mut key = self.rows(shard, generation);
        key.extend_from_slice(node_id.as_bytes());
        key
    }
}

/// The first key after every key that starts with `prefix` (etcd's range end).
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Only for a prefix of 0xff bytes: "\0" means "to the end of the keyspace".
    vec![0]
}

/// A shard's metadata: the applied sequence number and which generation of
/// rows is live. [`replace`](crate::GhostStore::replace) writes a new
/// generation in as many transactions as it takes, then flips this value in
/// one, so a replacement is atomic at any size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Meta {
    pub(super) applied_seq: Option<u64>,
    pub(super) generation: u64,
}

impl Meta {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(META_LEN);
        out.extend_from_slice(&META_MAGIC);
        out.push(META_VERSION);
        out.push(u8::from(self.applied_seq.is_some()));
        out.extend_from_slice(&self.applied_seq.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&self.generation.to_le_bytes());
        let sum = xxhash_rust::xxh3::xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Decodes a stored value; every failure is an [`Error::Decode`], so that
    /// the shard fails closed rather than loads without its sequence number.
    pub(super) fn decode(bytes: &[u8]) -> Result<Self> {
        let head = &bytes[..bytes.len().min(4)];
        if !META_MAGIC.starts_with(head) {
            return Err(DecodeError::BadMagic { found: head.to_vec() }.into());
        }
        if let Some(&v) = bytes.get(4)
            && v != META_VERSION
        {
            return Err(DecodeError::UnsupportedVersion(v).into());
        }
        let (needed, available) = (META_LEN as u64, bytes.len() as u64);
        if available < needed {
            return Err(DecodeError::Truncated { needed, available }.into());
        }
        if available > needed {
            return Err(DecodeError::Malformed(format!("shard meta of {available} bytes")).into());
        }
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let (stored, computed) = (word(22), xxhash_rust::xxh3::xxh3_64(&bytes[..22]));
        if stored != computed {
            return Err(DecodeError::ChecksumMismatch { stored, computed }.into());
        }
        let applied_seq = match bytes[5] {
            0 => None,
            1 => Some(word(6)),
            b => return Err(DecodeError::Malformed(format!("shard meta seq flag {b}")).into()),
        };
        Ok(Self { applied_seq, generation: word(14) })
    }
}

/// Checks the prefix's format marker (`None`: absent, to be written).
pub(super) fn check_format(found: Option<&[u8]>, prefix: &str) -> Result<()> {
    match found {
        None => Ok(()),
        Some(f) if f == FORMAT => Ok(()),
        Some(f) => Err(Error::NotAStore(format!(
            "etcd prefix {prefix:?} holds format {:?}, expected {:?}",
            String::from_utf8_lossy(f),
            String::from_utf8_lossy(FORMAT)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_rejects_damage() {
        for m in [Meta::default(), Meta { applied_seq: Some(u64::MAX), generation: 7 }] {
            let bytes = m.encode();
            assert_eq!(Meta::decode(&bytes).unwrap(), m);
            for i in 0..bytes.len() {
                let mut bad = bytes.clone();
                bad[i] ^= 0x40;
                assert!(matches!(Meta::decode(&bad), Err(Error::Decode(_))), "byte {i}");
            }
            for n in 0..bytes.len() {
                assert!(matches!(Meta::decode(&bytes[..n]), Err(Error::Decode(_))), "length {n}");
            }
        }
    }

    #[test]
    fn shard_ranges_do_not_overlap() {
        let k = Keys::new("p/");
        let (a, b) = (k.rows(1, 0), k.rows(10, 0));
        assert!(!b.starts_with(&a) && !a.starts_with(&b));
        assert!(!k.rows(1, 1).starts_with(&k.rows(1, 12)) && !k.rows(1, 12).starts_with(&k.rows(1, 1)));
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b");
        assert_eq!(prefix_end(&[0xff]), vec![0]);
        assert!(k.row(1, 0, "x/y").starts_with(&a));
    }
}
