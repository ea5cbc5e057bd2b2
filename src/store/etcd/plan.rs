//! Splitting one store write into etcd transactions that fit the server's limits, in order.

use super::state::Cursor;
use etcd_client::{Compare, CompareOp, DeleteOptions, TxnOp};

/// Bytes a request spends on an operation beyond its keys and values (field
/// tags, lengths, the request-op wrapper): an overestimate, so that the sum
/// stays under the server's limit.
const OP_FRAMING: usize = 16;

/// One write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// A put of a key that must not exist yet: guarded by a compare of its
    /// version with 0, so that a request retried after its answer was lost
    /// cannot land twice, nor over what a later write put there.
    Create {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Every key in `[key, end)`.
    DeleteRange {
        key: Vec<u8>,
        end: Vec<u8>,
    },
}

impl Op {
    fn size(&self) -> usize {
        OP_FRAMING
            + match self {
                Self::Put { key, value } => key.len() + value.len(),
                Self::Create { key, value } => OP_FRAMING + 2 * key.len() + value.len(),
                Self::DeleteRange { key, end } => key.len() + end.len(),
            }
    }

    /// Compares it adds to its transaction's guard.
    fn compares(&self) -> usize {
        usize::from(matches!(self, Self::Create { .. }))
    }

    /// The compare that guards it, if any.
    pub(super) fn guard(&self) -> Option<Compare> {
        match self {
            Self::Create { key, .. } => Some(Compare::version(key.clone(), CompareOp::Equal, 0)),
            _ => None,
        }
    }

    pub(super) fn into_txn_op(self) -> TxnOp {
        match self {
            Self::Put { key, value } | Self::Create { key, value } => TxnOp::put(key, value, None),
            Self::DeleteRange { key, end } => TxnOp::delete(key, Some(DeleteOptions::new().with_range(end))),
        }
    }
}

/// Writes that must commit together; `after` is where the shard stands once they have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Group {
    pub(super) ops: Vec<Op>,
    pub(super) after: Option<Cursor>,
}

impl Group {
    pub(super) fn one(op: Op) -> Self {
        Self { ops: vec![op], after: None }
    }
}

/// One shard's groups, in the order they must commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ShardWrites {
    pub(super) shard: u16,
    pub(super) groups: Vec<Group>,
}

/// One transaction: guarded by the ownership of `shards` (and each
/// [`Op::Create`]'s absence).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Part {
    pub(super) shards: Vec<u16>,
    pub(super) ops: Vec<Op>,
    pub(super) after: Vec<(u16, Cursor)>,
}

impl Part {
    /// Compares its guard holds: one per shard, one per create.
    fn compares(&self) -> usize {
        self.shards.len() + self.ops.iter().map(Op::compares).sum::<usize>()
    }
}

/// What one transaction may hold.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Operations per list (etcd's `--max-txn-ops` counts compares and
    /// operations separately; each part has one compare per shard and per create).
    pub(super) max_ops: usize,
    /// Request bytes (etcd's `--max-request-bytes`, less a margin).
    pub(super) max_bytes: usize,
    /// Bytes of one shard's ownership compare.
    pub(super) compare_bytes: usize,
}

/// Packs the groups, in order, into as few parts as the limits allow. A group
/// never spans two parts, and a part is never empty; a group larger than the
/// limits gets a part of its own (the server then refuses it, no write is
/// lost). So a group is atomic; a shard's log record too large for one group
/// is written as a group of entries that counts only once complete (`log.rs`).
pub(super) fn split(writes: Vec<ShardWrites>, limits: Limits) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut cur = Part::default();
    let mut bytes = 0;
    for w in writes {
        for g in w.groups {
            if g.ops.is_empty() {
                continue;
            }
            let g_bytes: usize = g.ops.iter().map(Op::size).sum();
            let g_compares: usize = g.ops.iter().map(Op::compares).sum();
            let joins = |cur: &Part| cur.shards.last() == Some(&w.shard);
            let compare = |cur: &Part| if joins(cur) { 0 } else { limits.compare_bytes };
            let full = cur.ops.len() + g.ops.len() > limits.max_ops
                || cur.compares() + g_compares + usize::from(!joins(&cur)) > limits.max_ops
                || bytes + g_bytes + compare(&cur) > limits.max_bytes;
            if full && !cur.ops.is_empty() {
                parts.push(std::mem::take(&mut cur));
                bytes = 0;
            }
            bytes += g_bytes + compare(&cur);
            if !joins(&cur) {
                cur.shards.push(w.shard);
            }
            cur.ops.extend(g.ops);
            if let Some(c) = g.after {
                cur.after.push((w.shard, c));
            }
        }
    }
    if !cur.ops.is_empty() {
        parts.push(cur);
    }
    parts
}

/// True if `group` alone fits one transaction.
#[cfg(test)]
fn fits(group: &Group, limits: Limits) -> bool {
    let bytes: usize = group.ops.iter().map(Op::size).sum();
    let compares = 1 + group.ops.iter().map(Op::compares).sum::<usize>();
    group.ops.len() <= limits.max_ops
        && compares <= limits.max_ops
        && bytes + limits.compare_bytes <= limits.max_bytes
}

/// The largest value that a create (or put) of a `key_len`-byte key may carry
/// and still fit one transaction.
pub(super) fn value_budget(limits: Limits, key_len: usize) -> usize {
    limits.max_bytes.saturating_sub(limits.compare_bytes + 2 * (OP_FRAMING + key_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, n: usize) -> Op {
        Op::Put { key: k.as_bytes().to_vec(), value: vec![0; n] }
    }

    fn writes(shard: u16, rows: usize, value: usize, seq: Option<u64>) -> ShardWrites {
        let mut groups: Vec<_> = (0..rows).map(|i| Group::one(put(&format!("{shard}/{i}"), value))).collect();
        if let Some(seq) = seq {
            let after = Cursor { next: seq, ..Cursor::default() };
            groups.push(Group { ops: vec![put(&format!("m{shard}"), 30)], after: Some(after) });
        }
        ShardWrites { shard, groups }
    }

    fn check(input: Vec<ShardWrites>, limits: Limits) -> Vec<Part> {
        let all: Vec<Op> = input.iter().flat_map(|w| w.groups.iter().flat_map(|g| g.ops.clone())).collect();
        let parts = split(input.clone(), limits);
        let out: Vec<Op> = parts.iter().flat_map(|p| p.ops.clone()).collect();
        assert_eq!(out, all, "every op once, in order");
        for p in &parts {
            assert!(!p.ops.is_empty());
            let bytes: usize =
                p.ops.iter().map(Op::size).sum::<usize>() + p.shards.len() * limits.compare_bytes;
            assert!(p.ops.len() <= limits.max_ops && p.compares() <= limits.max_ops);
            assert!(bytes <= limits.max_bytes || p.ops.len() == 1, "{bytes} bytes");
        }
        for w in &input {
            let last = parts.iter().rposition(|p| p.shards.contains(&w.shard));
            let meta = parts.iter().position(|p| p.after.iter().any(|(s, _)| *s == w.shard));
            if w.groups.iter().any(|g| g.after.is_some()) {
                assert_eq!(meta, last, "shard {}: seq in its last part", w.shard);
            }
        }
        parts
    }

    #[test]
    fn a_small_write_is_one_transaction() {
        let limits = Limits { max_ops: 128, max_bytes: 1 << 20, compare_bytes: 40 };
        let parts = check(vec![writes(1, 10, 40, Some(3)), writes(2, 5, 40, None)], limits);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].shards, vec![1, 2]);
    }

    #[test]
    fn large_writes_split_by_ops_and_bytes_with_seq_last() {
        for (max_ops, max_bytes) in [(128, 1 << 20), (7, 1 << 20), (128, 2_000), (3, 300), (1, 1 << 20)] {
            let limits = Limits { max_ops, max_bytes, compare_bytes: 40 };
            let input: Vec<_> =
                (0..6).map(|s| writes(s, usize::from(s) * 37, 50, (s % 2 == 0).then_some(9))).collect();
            let parts = check(input, limits);
            assert!(parts.len() > 1);
        }
    }

    #[test]
    fn a_group_never_splits() {
        let limits = Limits { max_ops: 3, max_bytes: 1 << 20, compare_bytes: 40 };
        let big = Group { ops: vec![put("a", 1), put("b", 1)], after: None };
        let w = ShardWrites { shard: 0, groups: vec![Group::one(put("x", 1)), Group::one(put("y", 1)), big] };
        let parts = check(vec![w], limits);
        assert_eq!(parts.iter().map(|p| p.ops.len()).collect::<Vec<_>>(), vec![2, 2]);
    }

    #[test]
    fn what_fits_is_what_splits_into_one_transaction() {
        let limits = Limits { max_ops: 3, max_bytes: 300, compare_bytes: 40 };
        for (ops, value, want) in
            [(1, 10, true), (3, 10, true), (4, 10, false), (2, 100, true), (3, 100, false)]
        {
            let g = Group { ops: (0..ops).map(|i| put(&format!("k{i}"), value)).collect(), after: None };
            assert_eq!(fits(&g, limits), want, "{ops} ops of {value} bytes");
            let w = ShardWrites { shard: 0, groups: g.ops.iter().cloned().map(Group::one).collect() };
            assert_eq!(split(vec![w], limits).len() == 1, want, "{ops} ops of {value} bytes");
        }
        let budget = value_budget(limits, 5);
        let create = |n| Group::one(Op::Create { key: b"k1234".to_vec(), value: vec![0; n] });
        assert!(fits(&create(budget), limits) && fits(&Group::one(put("k1234", budget)), limits));
        assert!(!fits(&create(budget + 1), limits));
    }

    #[test]
    fn an_oversized_write_stands_alone() {
        let limits = Limits { max_ops: 128, max_bytes: 100, compare_bytes: 40 };
        let parts = check(vec![writes(0, 3, 500, Some(1))], limits);
        assert_eq!(parts.len(), 4);
    }

    #[test]
    fn creates_count_as_compares() {
        let limits = Limits { max_ops: 4, max_bytes: 1 << 20, compare_bytes: 40 };
        let create = |k: &str| Group::one(Op::Create { key: k.as_bytes().to_vec(), value: vec![1] });
        // Two shards of two creates each: 2 + 4 compares do not fit 4; one shard does.
        let w = |shard| ShardWrites {
            shard,
            groups: vec![create(&format!("{shard}a")), create(&format!("{shard}b"))],
        };
        let parts = check(vec![w(0), w(1)], limits);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.compares() == 3));
    }
}
