//! `FoldKey`: a ghosts-table key as a fold handles it, with a copy of its first bytes.

use std::cmp::Ordering;

/// Id bytes a [`FoldKey`] copies.
const COPIED: usize = 14;

/// A `(shard, id)` key of the ghosts table, with the shard and the id's first
/// 14 bytes copied into one number beside it.
///
/// A fold sorts a million of these, whose ids lie in the log's records all
/// over memory, and merges them with a shard's rows: most comparisons, and
/// every one between ids of at most 14 bytes, are decided by the copy without
/// reading the id.
#[derive(Debug, Clone, Copy)]
pub(super) struct FoldKey<'a> {
    /// Shard (big-endian), then the id's first bytes, zero-padded: sorts as
    /// the ghosts table does (a shorter id, padded with zeros, never sorts
    /// after an id it is a prefix of); equal copies say nothing more.
    prefix: u128,
    id: &'a str,
}

impl<'a> FoldKey<'a> {
    pub(super) fn new(shard: u16, id: &'a str) -> Self {
        let mut bytes = [0u8; 16];
        bytes[..2].copy_from_slice(&shard.to_be_bytes());
        let n = id.len().min(COPIED);
        bytes[2..2 + n].copy_from_slice(&id.as_bytes()[..n]);
        Self { prefix: u128::from_be_bytes(bytes), id }
    }

    pub(super) fn shard(&self) -> u16 {
        (self.prefix >> 112) as u16
    }

    /// The key as the ghosts table takes it.
    pub(super) fn pair(&self) -> (u16, &'a str) {
        (self.shard(), self.id)
    }
}

impl PartialEq for FoldKey<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for FoldKey<'_> {}

impl Ord for FoldKey<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.prefix.cmp(&other.prefix).then_with(|| {
            if self.id.len().max(other.id.len()) <= COPIED {
                // Same padded bytes: the shorter id is a prefix of the longer.
                self.id.len().cmp(&other.id.len())
            } else {
                self.id.cmp(other.id)
            }
        })
    }
}

impl PartialOrd for FoldKey<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    /// Order and equality agree with the plain `(shard, id)` pair's, on
    /// ids made to tie on their copied bytes.
    #[test]
    fn a_fold_key_compares_as_its_pair_does() {
        let long = "abcdefghijklmn";
        let ids = [
            "",
            "\0",
            "a",
            "a\0",
            "a\0\0",
            "a\0b",
            "ab",
            "é",
            "e\u{301}",
            long,
            "abcdefghijklm\0",
            "abcdefghijklmno",
            "abcdefghijklmn\0",
            "abcdefghijklmnop",
            "abcdefghijklmnoq",
            "abcdefghijklmnz",
            "b",
            "\u{10ffff}",
        ];
        let keys: Vec<(u16, &str)> = [0u16, 1, 255, 256, u16::MAX]
            .into_iter()
            .flat_map(|s| ids.iter().map(move |&id| (s, id)))
            .collect();
        for &a in &keys {
            let ka = FoldKey::new(a.0, a.1);
            assert_eq!(ka.pair(), a);
            for &b in &keys {
                let kb = FoldKey::new(b.0, b.1);
                assert_eq!(ka.cmp(&kb), a.cmp(&b), "{a:?} {b:?}");
                assert_eq!(ka == kb, a == b, "{a:?} {b:?}");
            }
        }
    }
}
