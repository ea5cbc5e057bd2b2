//! `EtcdStore`'s key layout under its prefix, the per-shard metadata value, and the format marker.

use crate::error::{DecodeError, Error, Result};

/// Written once under `{prefix}format`: a prefix holding anything else is not
/// adopted, so that a foreign or future layout is never written over.
pub(super) const FORMAT: &[u8] = b"vshard-ghosts-etcd/2";
/// The first layout: one key per stub. Refused, with the upgrade named.
const FORMAT_V1: &[u8] = b"vshard-ghosts-etcd/1";
/// Version of the metadata value below.
const META_VERSION: u8 = 3;
const META_MAGIC: [u8; 4] = *b"VSGM";
/// magic(4) version(1) generation(8) chunks(4) checkpoint bytes(8) log from(8)
/// xxh3-64(8), integers little-endian.
const META_LEN: usize = 41;

/// Every key of the store, derived from its prefix.
///
/// Shards are zero-padded decimals and indexes fixed-width hexadecimals, so that
/// a shard's keys of one kind form one range, sorted as their numbers, and read
/// well in `etcdctl get --prefix`.
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

    /// The prefix of every checkpoint chunk of the shard, of any generation.
    pub(super) fn checkpoints(&self, shard: u16) -> Vec<u8> {
        format!("{}ckpt/{shard:05}/", self.prefix).into_bytes()
    }

    /// The prefix of the chunks of the shard's checkpoint `generation`.
    pub(super) fn checkpoint(&self, shard: u16, generation: u64) -> Vec<u8> {
        format!("{}ckpt/{shard:05}/{generation:016x}/", self.prefix).into_bytes()
    }

    /// One chunk of a checkpoint.
    pub(super) fn checkpoint_chunk(&self, shard: u16, generation: u64, chunk: u32) -> Vec<u8> {
        let mut key = self.checkpoint(shard, generation);
        key.extend_from_slice(format!("{chunk:08x}").as_bytes());
        key
    }

    /// The prefix of the shard's log entries.
    pub(super) fn log(&self, shard: u16) -> Vec<u8> {
        format!("{}log/{shard:05}/", self.prefix).into_bytes()
    }

    /// The shard's log entry `index`.
    pub(super) fn log_entry(&self, shard: u16, index: u64) -> Vec<u8> {
        let mut key = self.log(shard);
        key.extend_from_slice(format!("{index:016x}").as_bytes());
        key
    }

    /// The index a key under [`log`](Self::log) names.
    pub(super) fn log_index(&self, shard: u16, key: &[u8]) -> Option<u64> {
        let hex = key.strip_prefix(self.log(shard).as_slice())?;
        u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok().filter(|_| hex.len() == 16)
    }

    /// The chunk number a key under [`checkpoint`](Self::checkpoint) names.
    pub(super) fn chunk_index(&self, shard: u16, generation: u64, key: &[u8]) -> Option<u32> {
        let hex = key.strip_prefix(self.checkpoint(shard, generation).as_slice())?;
        u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok().filter(|_| hex.len() == 8)
    }
}

/// The prefix of every owner key under the store prefix `prefix`: the cluster's
/// owner watch reads and watches it.
#[cfg(feature = "cluster")]
pub(crate) fn owner_prefix(prefix: &str) -> String {
    format!("{prefix}owner/")
}

/// The shard an owner key under `prefix` names; `None` for any other key.
#[cfg(feature = "cluster")]
pub(crate) fn owner_shard(prefix: &str, key: &[u8]) -> Option<u16> {
    let rest = key.strip_prefix(owner_prefix(prefix).as_bytes())?;
    std::str::from_utf8(rest).ok()?.parse().ok()
}

/// The first key after every key that starts with `prefix` (etcd's range end).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
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

/// A shard's metadata: which checkpoint is live and where its log starts.
/// Written only when a checkpoint is (a fold or a replacement), in the same
/// transaction that deletes what the new checkpoint makes obsolete; a commit
/// appends log entries and leaves it alone. Absent: the shard was never
/// checkpointed (an empty checkpoint, the log from index 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Meta {
    /// The live checkpoint's generation; its chunks are under `Keys::checkpoint`.
    pub(super) generation: u64,
    /// How many chunks it has; 0: no checkpoint (an empty table).
    pub(super) chunks: u32,
    /// Its encoded size: what the log is measured against for the next fold.
    pub(super) bytes: u64,
    /// The first log index not folded into it. Entries below are obsolete:
    /// even one that a late, retried request wrote after the fold is ignored.
    pub(super) log_from: u64,
}

impl Meta {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(META_LEN);
        out.extend_from_slice(&META_MAGIC);
        out.push(META_VERSION);
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&self.chunks.to_le_bytes());
        out.extend_from_slice(&self.bytes.to_le_bytes());
        out.extend_from_slice(&self.log_from.to_le_bytes());
        let sum = xxhash_rust::xxh3::xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Decodes a stored value; every failure is an [`Error::Decode`], so that
    /// the shard fails closed rather than loads without its checkpoint.
    pub(super) fn decode(bytes: &[u8]) -> Result<Self> {
        let head = &bytes[..bytes.len().min(4)];
        if !META_MAGIC.starts_with(head) {
            return Err(DecodeError::BadMagic { found: head.to_vec() }.into());
        }
        match bytes.get(4) {
            None | Some(&META_VERSION) => {}
            Some(&v) => return Err(DecodeError::UnsupportedVersion(v).into()),
        }
        let (needed, available) = (META_LEN as u64, bytes.len() as u64);
        if available < needed {
            return Err(DecodeError::Truncated { needed, available }.into());
        }
        if available > needed {
            return Err(DecodeError::Malformed(format!("shard meta of {available} bytes")).into());
        }
        let end = bytes.len() - 8;
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let (stored, computed) = (word(end), xxhash_rust::xxh3::xxh3_64(&bytes[..end]));
        if stored != computed {
            return Err(DecodeError::ChecksumMismatch { stored, computed }.into());
        }
        let chunks = u32::from_le_bytes(bytes[13..17].try_into().expect("4 bytes"));
        Ok(Self { generation: word(5), chunks, bytes: word(17), log_from: word(25) })
    }
}

/// Checks the prefix's format marker (`None`: absent, to be written).
pub(super) fn check_format(found: Option<&[u8]>, prefix: &str) -> Result<()> {
    match found {
        None => Ok(()),
        Some(f) if f == FORMAT => Ok(()),
        Some(f) if f == FORMAT_V1 => Err(Error::NotAStore(format!(
            "etcd prefix {prefix:?} holds the one-key-per-stub layout {:?}, which this build does not \
             read or write; upgrade: export each shard with the build that wrote it \
             (GhostStore::export_snapshot) and import it under a new prefix with this one \
             (GhostStore::import_snapshot)",
            String::from_utf8_lossy(f),
        ))),
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

    #[cfg(feature = "cluster")]
    #[test]
    fn owner_keys_name_their_shard() {
        let keys = Keys::new("p/");
        assert_eq!(owner_shard("p/", &keys.owner(42)), Some(42));
        assert_eq!(owner_shard("p/", &keys.meta(42)), None);
        assert_eq!(owner_shard("q/", &keys.owner(42)), None);
        assert_eq!(owner_shard("p/", b"p/owner/x"), None);
    }

    #[test]
    fn meta_round_trips_and_rejects_damage() {
        for m in [Meta::default(), Meta { generation: 7, chunks: 3, bytes: 1 << 40, log_from: u64::MAX }] {
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
    fn the_first_layout_is_refused_with_its_upgrade() {
        let e = check_format(Some(FORMAT_V1), "p/").unwrap_err();
        assert!(matches!(&e, Error::NotAStore(m) if m.contains("export_snapshot")), "{e}");
        assert!(check_format(Some(FORMAT), "p/").is_ok() && check_format(None, "p/").is_ok());
        assert!(matches!(check_format(Some(b"x"), "p/"), Err(Error::NotAStore(_))));
    }

    #[test]
    fn indexes_read_back_from_their_keys() {
        let k = Keys::new("p/");
        for i in [0, 1, 0xabc, u64::MAX] {
            assert_eq!(k.log_index(3, &k.log_entry(3, i)), Some(i));
        }
        assert_eq!(k.log_index(4, &k.log_entry(3, 1)), None);
        assert_eq!(k.chunk_index(3, 9, &k.checkpoint_chunk(3, 9, 77)), Some(77));
        assert_eq!(k.chunk_index(3, 8, &k.checkpoint_chunk(3, 9, 77)), None);
    }

    #[test]
    fn shard_ranges_do_not_overlap() {
        let k = Keys::new("p/");
        let (a, b) = (k.log(1), k.log(10));
        assert!(!b.starts_with(&a) && !a.starts_with(&b));
        let (c, d) = (k.checkpoint(1, 1), k.checkpoint(1, 0x12));
        assert!(!c.starts_with(&d) && !d.starts_with(&c) && c.starts_with(&k.checkpoints(1)));
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b");
        assert_eq!(prefix_end(&[0xff]), vec![0]);
        assert!(k.log_entry(1, 5).starts_with(&a));
    }
}
