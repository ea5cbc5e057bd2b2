//! `EtcdStore`'s key layout under its prefix, and the per-shard metadata value.

use crate::error::{DecodeError, Error, Result};

/// Written once under `{prefix}format`: a prefix holding anything else is not
/// adopted, so that a foreign or future layout is never written over.
pub(super) const FORMAT: &[u8] = b"vshard-ghosts-etcd/1";
/// Version of the metadata value below with no intent pending; written
/// whenever there is none, so that a shard at rest reads as before intents.
pub(super) const META_VERSION: u8 = 1;
/// Version of the metadata value with an intent pending. A build that knows
/// only version 1 refuses it (the shard fails closed) rather than load the
/// shard without the intent's rows.
pub(super) const META_VERSION_INTENT: u8 = 2;
const META_MAGIC: [u8; 4] = *b"VSGM";
/// magic(4) version(1) has_seq(1) seq(8, LE) generation(8, LE) xxh3-64(8, LE).
const META_LEN: usize = 30;
/// Version 2 inserts, before the checksum: intent id(8, LE) chunks(4, LE)
/// has_seq(1) seq(8, LE).
const META_INTENT_LEN: usize = META_LEN + 21;

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

    /// The prefix of the shard's pending intent's chunks.
    pub(super) fn intent(&self, shard: u16) -> Vec<u8> {
        format!("{}intent/{shard:05}/", self.prefix).into_bytes()
    }

    /// The key of one chunk of the shard's pending intent.
    pub(super) fn intent_chunk(&self, shard: u16, chunk: u32) -> Vec<u8> {
        let mut key = self.intent(shard);
        key.extend_from_slice(format!("{chunk:05}").as_bytes());
        key
    }

    /// The key of one stub row.
    pub(super) fn row(&self, shard: u16, generation: u64, node_id: &str) -> Vec<u8> {
        let mut key = self.rows(shard, generation);
        key.extend_from_slice(node_id.as_bytes());
        key
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

/// A shard's metadata: the applied sequence number and which generation of
/// rows is live. [`replace`](crate::store::GhostStore::replace) writes a new
/// generation in as many transactions as it takes, then flips this value in
/// one, so a replacement is atomic at any size. A commit too large for one
/// transaction is made atomic the same way, by [`Intent`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Meta {
    pub(super) applied_seq: Option<u64>,
    pub(super) generation: u64,
    /// A commit whose rows are durable as intent chunks and that is committed
    /// (this value is its commit point), but not yet applied to the rows.
    pub(super) intent: Option<Intent>,
}

/// A committed commit still to be applied to the rows: its changes are in
/// `chunks` chunks under `Keys::intent`, each tagged with `id`; applying them
/// ends with the metadata at `seq` and no intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Intent {
    /// Random: chunks left over from an attempt cut short before its commit
    /// point never pass for this one's.
    pub(super) id: u64,
    pub(super) chunks: u32,
    /// The applied sequence number once applied.
    pub(super) seq: Option<u64>,
}

impl Meta {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(META_INTENT_LEN);
        out.extend_from_slice(&META_MAGIC);
        out.push(if self.intent.is_some() { META_VERSION_INTENT } else { META_VERSION });
        push_seq(&mut out, self.applied_seq);
        out.extend_from_slice(&self.generation.to_le_bytes());
        if let Some(i) = self.intent {
            out.extend_from_slice(&i.id.to_le_bytes());
            out.extend_from_slice(&i.chunks.to_le_bytes());
            push_seq(&mut out, i.seq);
        }
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
        let needed = match bytes.get(4) {
            None | Some(&META_VERSION) => META_LEN,
            Some(&META_VERSION_INTENT) => META_INTENT_LEN,
            Some(&v) => return Err(DecodeError::UnsupportedVersion(v).into()),
        };
        let (needed, available) = (needed as u64, bytes.len() as u64);
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
        let intent = (end > 22)
            .then(|| -> Result<Intent> {
                let chunks = u32::from_le_bytes(bytes[30..34].try_into().expect("4 bytes"));
                Ok(Intent { id: word(22), chunks, seq: read_seq(bytes, 34)? })
            })
            .transpose()?;
        Ok(Self { applied_seq: read_seq(bytes, 5)?, generation: word(14), intent })
    }
}

/// A flag byte, then the value (0 when absent), little-endian.
fn push_seq(out: &mut Vec<u8>, seq: Option<u64>) {
    out.push(u8::from(seq.is_some()));
    out.extend_from_slice(&seq.unwrap_or(0).to_le_bytes());
}

fn read_seq(bytes: &[u8], at: usize) -> Result<Option<u64>> {
    let value = u64::from_le_bytes(bytes[at + 1..at + 9].try_into().expect("8 bytes"));
    match bytes[at] {
        0 => Ok(None),
        1 => Ok(Some(value)),
        b => Err(DecodeError::Malformed(format!("shard meta seq flag {b}")).into()),
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
        let intent = Intent { id: 0xfeed, chunks: 3, seq: Some(9) };
        for m in [
            Meta::default(),
            Meta { applied_seq: Some(u64::MAX), generation: 7, intent: None },
            Meta { applied_seq: None, generation: 2, intent: Some(intent) },
            Meta { applied_seq: Some(4), generation: 0, intent: Some(Intent { seq: None, ..intent }) },
        ] {
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
