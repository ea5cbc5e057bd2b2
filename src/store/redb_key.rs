//! `FoldKey`: a ghosts-table key as a fold handles it, with a copy of its first bytes.

use std::cmp::Ordering;

/// Id bytes a [`FoldKey`] copies: what fits beside the shard in a `u128`.
const COPIED: usize = 14;
const _: () = assert!(2 + COPIED == 16);

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

    use proptest::prelude::*;

    const PIECES: [&str; 10] =
        ["\0", "\u{1}", "a", "b", "é", "\u{7f}", "\u{80}", "\u{ff}", "\u{800}", "\u{10ffff}"];

    fn id() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::collection::vec(prop::sample::select(&PIECES[..]), 0..20).prop_map(|v| v.concat()),
            (0usize..18, prop::collection::vec(prop::sample::select(&PIECES[..]), 0..4))
                .prop_map(|(n, t)| format!("{}{}", "\0".repeat(n), t.concat())),
            (0usize..18, prop::collection::vec(prop::sample::select(&PIECES[..]), 0..4))
                .prop_map(|(n, t)| format!("{}{}", &"abcdefghijklmnopqr"[..n], t.concat())),
            ".{0,20}",
        ]
    }

    fn shard() -> impl Strategy<Value = u16> {
        prop_oneof![prop::sample::select(vec![0u16, 1, 255, 256, 65534, 65535]), any::<u16>()]
    }

    /// Two keys, the second often derived from the first: equal, cut short,
    /// extended, a piece inserted or put in place of its tail; mostly on one shard.
    fn pair() -> impl Strategy<Value = ((u16, String), (u16, String))> {
        (
            shard(),
            id(),
            shard(),
            id(),
            0u8..6,
            any::<prop::sample::Index>(),
            prop::sample::select(&PIECES[..]),
        )
            .prop_map(|(s1, a, s2, b, how, ix, piece)| {
                let cut = |s: &str| {
                    let mut n = ix.index(s.len() + 1);
                    while !s.is_char_boundary(n) {
                        n -= 1;
                    }
                    n
                };
                let b = match how {
                    0 => b,
                    1 => a.clone(),
                    2 => a[..cut(&a)].to_owned(),
                    3 => format!("{a}{piece}"),
                    4 => {
                        let n = cut(&a);
                        format!("{}{piece}{}", &a[..n], &a[n..])
                    }
                    _ => {
                        let n = cut(&a);
                        format!("{}{piece}", &a[..n])
                    }
                };
                let s2 = if how == 0 || ix.index(3) == 0 { s2 } else { s1 };
                ((s1, a), (s2, b))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]
        #[test]
        fn a_fold_key_orders_as_its_pair_on_random_keys((a, b) in pair()) {
            let (ka, kb) = (FoldKey::new(a.0, &a.1), FoldKey::new(b.0, &b.1));
            let (pa, pb) = ((a.0, a.1.as_str()), (b.0, b.1.as_str()));
            prop_assert_eq!(ka.pair(), pa);
            prop_assert_eq!(ka.shard(), a.0);
            prop_assert_eq!(ka.cmp(&kb), pa.cmp(&pb));
            prop_assert_eq!(kb.cmp(&ka), pb.cmp(&pa));
            prop_assert_eq!(ka.partial_cmp(&kb), pa.partial_cmp(&pb));
            prop_assert_eq!(ka == kb, pa == pb);
        }

        #[test]
        fn fold_keys_sort_as_their_pairs(v in prop::collection::vec((shard(), id()), 0..60)) {
            let mut keys: Vec<FoldKey<'_>> = v.iter().map(|(s, i)| FoldKey::new(*s, i)).collect();
            keys.sort_unstable();
            let got: Vec<(u16, &str)> = keys.iter().map(|k| k.pair()).collect();
            let mut w = v.clone();
            w.sort();
            let want: Vec<(u16, &str)> = w.iter().map(|(s, i)| (*s, i.as_str())).collect();
            prop_assert_eq!(got, want);
        }
    }

    /// Every pair of ids over a small alphabet around the 14-byte boundary,
    /// on four shards.
    #[test]
    fn every_pair_near_the_copied_bytes_orders_as_its_pair() {
        let pieces = ["\0", "a", "é", "\u{10ffff}"];
        let mut tails = vec![String::new()];
        let mut frontier = vec![String::new()];
        for _ in 0..3 {
            frontier = frontier.iter().flat_map(|t| pieces.iter().map(move |p| format!("{t}{p}"))).collect();
            tails.extend(frontier.iter().cloned());
        }
        let mut ids = Vec::new();
        for base in ["", "abcdefghijkl", "abcdefghijklm", "abcdefghijklmn", "\0\0\0\0\0\0\0\0\0\0\0\0\0"] {
            for t in &tails {
                ids.push(format!("{base}{t}"));
            }
        }
        ids.sort();
        ids.dedup();
        let shards = [0u16, 255, 256, 65535];
        let keys: Vec<(u16, &str)> =
            shards.iter().flat_map(|&s| ids.iter().map(move |i| (s, i.as_str()))).collect();
        let fks: Vec<FoldKey<'_>> = keys.iter().map(|&(s, i)| FoldKey::new(s, i)).collect();
        // Pairs of distinct keys whose copies tie: those the copy cannot decide.
        let (mut short_ties, mut long_ties) = (0u64, 0u64);
        for (x, fx) in keys.iter().zip(&fks) {
            for (y, fy) in keys.iter().zip(&fks) {
                assert_eq!(fx.cmp(fy), x.cmp(y), "{x:?} {y:?}");
                assert_eq!(fx == fy, x == y, "{x:?} {y:?}");
                if fx.prefix == fy.prefix && x != y {
                    if x.1.len().max(y.1.len()) <= COPIED {
                        short_ties += 1;
                    } else {
                        long_ties += 1;
                    }
                }
            }
        }
        assert!(short_ties > 0 && long_ties > 0, "ties: {short_ties} short, {long_ties} long");
    }
}
