//! `RedbStore`'s commit log through the public API: replay on load, checkpoints,
//! sequence numbers, corrupt records, `replace`, and files from before the log.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vshard_ghosts::store::{GhostStore, RedbStore, ShardChanges, StubRecord};
use vshard_ghosts::table::GhostTable;
use vshard_ghosts::{DecodeError, EdgeEvents, Epoch, Error, ShardId, TableConfig};

#[allow(dead_code)] // each test file uses a different part of it
mod support;

use support::redb_tables::{COMMIT_LOG, GHOSTS, META, SHARD_META};
use support::{cfg, changes, contents, loaded, rec};

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("ghosts.redb")
}

/// The log's keys and values, read through redb directly (the store closed).
fn log_entries(path: &Path) -> Vec<(u64, Vec<u8>)> {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let log = txn.open_table(COMMIT_LOG).unwrap();
    log.iter().unwrap().map(|e| e.unwrap()).map(|(k, v)| (k.value(), v.value().to_vec())).collect()
}

/// Random edge traffic on two shards, committed after every round, checked
/// against the tables themselves after reopening.
fn random_traffic(checkpoint_bytes: u64, expect_log: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(checkpoint_bytes);
    let mut tables =
        [GhostTable::new(ShardId(1), cfg()).unwrap(), GhostTable::new(ShardId(2), cfg()).unwrap()];
    let open = || RedbStore::open(db_path(&dir)).unwrap().with_checkpoint_bytes(checkpoint_bytes);
    let mut store = open();
    for round in 0..40u64 {
        for t in &mut tables {
            for _ in 0..20 {
                let id = format!("n{}", rng.u32(..60));
                match rng.u8(..4) {
                    0 => drop(t.insert(&id, ShardId(9), rng.u32(1..3), Epoch(round), round)),
                    1 => drop(t.edge_added(&id)),
                    _ => drop(t.edge_removed(&id)),
                }
            }
            t.apply_batch(Some(round), &EdgeEvents::new());
        }
        let batch: Vec<_> =
            tables.iter_mut().map(|t| ShardChanges { shard: t.shard(), changes: t.take_changes() }).collect();
        store.commit(&batch).unwrap();
        if round % 13 == 5 {
            // Reopening folds the log; later commits start a new one.
            drop(store);
            store = open();
        }
    }
    assert_eq!(store.log_records() > 0, expect_log, "threshold {checkpoint_bytes}");
    // Loads replay the log over the rows...
    for t in &tables {
        assert_eq!(loaded(&store, t.shard()), contents(t), "threshold {checkpoint_bytes}");
    }
    // ...and a reopen folds it into them.
    drop(store);
    let store = open();
    for t in &tables {
        assert_eq!(loaded(&store, t.shard()), contents(t), "threshold {checkpoint_bytes}");
    }
    store.checkpoint().unwrap();
    assert_eq!(store.log_records(), 0);
    for t in &tables {
        assert_eq!(loaded(&store, t.shard()), contents(t), "threshold {checkpoint_bytes}, folded");
    }
}

#[test]
fn random_commits_survive_reopen_with_and_without_checkpoints() {
    random_traffic(RedbStore::DEFAULT_CHECKPOINT_BYTES, true); // log only
    random_traffic(0, false); // a checkpoint after every commit
    random_traffic(3_000, true); // some folded, some not
}

#[test]
fn removal_and_upsert_of_one_id_in_one_batch_and_across_batches() {
    for fold_each in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(db_path(&dir)).unwrap();
        let store = if fold_each { store.with_checkpoint_records(0) } else { store };
        store.commit(&[changes(1, vec![rec("a", 2, 1), rec("b", 2, 1), rec("c", 2, 1)], &[], None)]).unwrap();
        // One batch: removed then inserted again; the upsert is the current state.
        store.commit(&[changes(1, vec![rec("a", 3, 5)], &["a"], None)]).unwrap();
        // Across batches: removed, then back; inserted, then removed.
        store.commit(&[changes(1, vec![rec("d", 2, 1)], &["b"], None)]).unwrap();
        store.commit(&[changes(1, vec![rec("b", 4, 2)], &["d"], None)]).unwrap();
        let want = (vec![rec("a", 3, 5), rec("b", 4, 2), rec("c", 2, 1)], None);
        assert_eq!(loaded(&store, ShardId(1)), want, "fold each: {fold_each}");
        drop(store);
        let store = RedbStore::open(db_path(&dir)).unwrap();
        assert_eq!(loaded(&store, ShardId(1)), want, "fold each: {fold_each}, reopened");
        store.checkpoint().unwrap();
        assert_eq!(loaded(&store, ShardId(1)), want, "fold each: {fold_each}, folded");
    }
}

/// Batches that stage their changes write a stub once per batch, so one logged
/// section may hold more upserts than the table has stubs, or than its
/// `max_stubs`: it must still replay.
#[test]
fn staged_repeats_beyond_max_stubs_replay() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(db_path(&dir)).unwrap();
    let config = TableConfig { max_stubs: 1_000, ..cfg() };
    let mut t = GhostTable::new(ShardId(0), config.clone()).unwrap();
    for i in 0..300 {
        t.insert(&format!("n{i}"), ShardId(1), 1, Epoch(1), 0).unwrap();
    }
    store.commit(&[ShardChanges { shard: ShardId(0), changes: t.take_changes() }]).unwrap();
    let mut all = EdgeEvents::new();
    (0..300).for_each(|i| all.added(&format!("n{i}")));
    for seq in 1..=5 {
        t.apply_batch(Some(seq), &all);
    }
    let changes = t.take_changes();
    assert_eq!(changes.upserts().len(), 1_500, "each batch staged its own copies");
    store.commit(&[ShardChanges { shard: ShardId(0), changes }]).unwrap();
    let loaded = store.load(ShardId(0), &config).unwrap();
    assert_eq!(contents(&loaded), contents(&t));
    assert_eq!(loaded.get("n7").unwrap().refcount, 6);
}

#[test]
fn applied_seq_only_rises_across_rows_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(db_path(&dir)).unwrap();
    store.commit(&[changes(4, vec![], &[], Some(10))]).unwrap();
    store.checkpoint().unwrap(); // 10 in shard_meta
    for (seq, want) in [(Some(3), 10), (None, 10), (Some(12), 12), (Some(11), 12)] {
        store.commit(&[changes(4, vec![], &[], seq)]).unwrap();
        assert_eq!(loaded(&store, ShardId(4)).1, Some(want), "after {seq:?}");
    }
    store.checkpoint().unwrap();
    assert_eq!(loaded(&store, ShardId(4)).1, Some(12));
    store.commit(&[changes(4, vec![], &[], Some(2))]).unwrap();
    drop(store);
    assert_eq!(loaded(&RedbStore::open(db_path(&dir)).unwrap(), ShardId(4)).1, Some(12));
}

#[test]
fn log_sequence_numbers_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(db_path(&dir)).unwrap();
    for i in 0..3 {
        store.commit(&[changes(0, vec![rec(&format!("n{i}"), 1, 1)], &[], None)]).unwrap();
    }
    assert_eq!((store.log_records(), store.log_bytes() > 0), (3, true));
    store.checkpoint().unwrap();
    assert_eq!((store.log_records(), store.log_bytes()), (0, 0));
    drop(store);
    // The emptied log's position survives a reopen.
    let store = RedbStore::open(db_path(&dir)).unwrap();
    store.commit(&[changes(0, vec![], &["n0"], None)]).unwrap();
    drop(store);
    let keys: Vec<u64> = log_entries(&db_path(&dir)).into_iter().map(|e| e.0).collect();
    assert_eq!(keys, [3]);
}

#[test]
fn many_shards_share_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(db_path(&dir)).unwrap();
    let shards = [0, 1, 77, u16::MAX];
    let batch: Vec<_> = shards
        .iter()
        .map(|&sh| {
            let ups = (0..30).map(|i| rec(&format!("s{sh}-{i}"), sh ^ 1, i + 1)).collect();
            changes(sh, ups, &[], Some(u64::from(sh) + 1))
        })
        .collect();
    store.commit(&batch).unwrap();
    assert_eq!(store.log_records(), 1);
    let check = |store: &RedbStore| {
        for sc in &batch {
            let mut want: Vec<StubRecord> = sc.changes.upserts().map(|r| r.to_record()).collect();
            want.sort_by(|a, b| a.node_id.cmp(&b.node_id));
            assert_eq!(loaded(store, sc.shard), (want, sc.changes.applied_seq()), "shard {}", sc.shard);
        }
        assert_eq!(loaded(store, ShardId(5)), (vec![], None));
    };
    check(&store);
    store.checkpoint().unwrap();
    check(&store);
    drop(store);
    let db = redb::Database::open(db_path(&dir)).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(SHARD_META).unwrap();
    for sc in &batch {
        assert_eq!(meta.get(sc.shard.get()).unwrap().unwrap().value(), (sc.changes.applied_seq(), 30));
    }
    assert_eq!(txn.open_table(GHOSTS).unwrap().len().unwrap(), 120);
    assert!(txn.open_table(COMMIT_LOG).unwrap().is_empty().unwrap());
}

/// The rows of every shard and its stored count, read through redb directly (the store closed).
fn rows_and_counts(path: &Path) -> BTreeMap<u16, (Vec<String>, u64)> {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let mut out: BTreeMap<u16, (Vec<String>, u64)> = BTreeMap::new();
    for e in txn.open_table(GHOSTS).unwrap().iter().unwrap() {
        let (k, _) = e.unwrap();
        let (shard, id) = k.value();
        out.entry(shard).or_default().0.push(id.to_owned());
    }
    for e in txn.open_table(SHARD_META).unwrap().iter().unwrap() {
        let (k, v) = e.unwrap();
        out.entry(k.value()).or_default().1 = v.value().1;
    }
    out
}

/// A fold writes a shard whose changes reach half its rows as one sorted run
/// over the shard's range, and any other row by row. Both, on neighbouring
/// shards and at the last shard number, with ids new before, between and after
/// the held ones, removals, and ids that agree on their first 14 bytes: after
/// every fold each shard holds exactly the model's rows, its stored count is
/// their number, and a reopened store loads the same.
#[test]
fn folds_that_rewrite_a_shard_and_folds_that_edit_rows_agree_with_a_model() {
    const SHARDS: [u16; 4] = [0, 1, 7, u16::MAX];
    let dir = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(23);
    // An independent model: each shard's rows by id, and its sequence number.
    let mut model: BTreeMap<u16, (BTreeMap<String, StubRecord>, Option<u64>)> = BTreeMap::new();
    let id = |rng: &mut fastrand::Rng| match rng.u8(..3) {
        0 => format!("n{:03}", rng.u32(..200)),
        1 => format!("a-shared-prefix-{:02}", rng.u32(..40)),
        _ => format!("{}", ['0', 'm', 'z'][rng.usize(..3)]).repeat(rng.usize(1..3)),
    };
    let store = RedbStore::open(db_path(&dir)).unwrap().with_checkpoint_bytes(u64::MAX);
    for round in 0..60u64 {
        let mut batch = Vec::new();
        for shard in SHARDS {
            let (rows, seq) = model.entry(shard).or_default();
            // Some rounds change many of a shard's rows, others a few.
            let n = if rng.bool() { rng.usize(..4) } else { rng.usize(..rows.len() + 20) };
            let (mut upserts, mut removals) = (BTreeMap::new(), Vec::new());
            for _ in 0..n {
                let id = id(&mut rng);
                if rng.u8(..3) == 0 {
                    rows.remove(&id);
                    upserts.remove(&id);
                    removals.push(id);
                } else {
                    let r = rec(&id, rng.u16(1..9), rng.u32(1..50));
                    rows.insert(id.clone(), r.clone());
                    upserts.insert(id, r);
                }
            }
            *seq = Some(round);
            let removals: Vec<&str> = removals.iter().map(String::as_str).collect();
            batch.push(changes(shard, upserts.into_values().collect(), &removals, Some(round)));
        }
        store.commit(&batch).unwrap();
        if round % 3 == 2 {
            store.checkpoint().unwrap();
            for shard in SHARDS {
                let (rows, seq) = &model[&shard];
                let want = (rows.values().cloned().collect::<Vec<_>>(), *seq);
                assert_eq!(loaded(&store, ShardId(shard)), want, "shard {shard}, round {round}");
            }
        }
    }
    drop(store);
    let stored = rows_and_counts(&db_path(&dir));
    for shard in SHARDS {
        let (rows, _) = &model[&shard];
        let ids: Vec<String> = rows.keys().cloned().collect();
        assert_eq!(stored[&shard], (ids, rows.len() as u64), "shard {shard}: rows and count");
    }
    let store = RedbStore::open(db_path(&dir)).unwrap();
    for (shard, (rows, seq)) in &model {
        assert_eq!(loaded(&store, ShardId(*shard)), (rows.values().cloned().collect(), *seq), "reopened");
    }
}

/// A fold has no table's config at hand: it takes any id a commit took, so a
/// table configured for ids longer than the default keeps them across a fold.
#[test]
fn a_fold_keeps_ids_longer_than_the_default_limit() {
    let dir = tempfile::tempdir().unwrap();
    let wide = TableConfig { max_node_id_len: 4096, ..cfg() };
    let long = "L".repeat(cfg().max_node_id_len + 1);
    let store = RedbStore::open(db_path(&dir)).unwrap();
    store.commit(&[changes(3, vec![rec(&long, 1, 2), rec("short", 1, 1)], &[], Some(1))]).unwrap();
    store.checkpoint().unwrap();
    assert_eq!(store.log_records(), 0);
    let t = store.load(ShardId(3), &wide).unwrap();
    assert_eq!(contents(&t), (vec![rec(&long, 1, 2), rec("short", 1, 1)], Some(1)));
}

/// `replace` writes a shard as one run; its stored count covers every row,
/// tombstones too, as a fold's does, and the neighbours keep theirs.
#[test]
fn replace_counts_every_row_it_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(db_path(&dir)).unwrap();
    store
        .commit(&[changes(0, vec![rec("x", 1, 1)], &[], None), changes(2, vec![rec("y", 1, 1)], &[], None)])
        .unwrap();
    let mut t = GhostTable::new(ShardId(1), cfg()).unwrap();
    for id in ["c", "a", "b"] {
        t.insert(id, ShardId(4), 1, Epoch(1), 5).unwrap();
    }
    t.reclaim("b", Epoch(2), 6).unwrap();
    store.replace(&t).unwrap();
    assert_eq!(loaded(&store, ShardId(1)), contents(&t));
    drop(store);
    let stored = rows_and_counts(&db_path(&dir));
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(stored[&1], (ids(&["a", "b", "c"]), 3), "a tombstone is a row");
    assert_eq!(stored[&0], (ids(&["x"]), 1));
    assert_eq!(stored[&2], (ids(&["y"]), 1));
}

#[test]
fn replace_after_logged_commits_drops_the_shards_older_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(db_path(&dir)).unwrap();
    store
        .commit(&[
            changes(7, vec![rec("old", 1, 1)], &[], Some(9)),
            changes(8, vec![rec("keep", 1, 1)], &[], None),
        ])
        .unwrap();
    store.commit(&[changes(7, vec![rec("older", 1, 1)], &["new"], Some(10))]).unwrap();
    let table = GhostTable::from_records(ShardId(7), cfg(), [rec("new", 2, 5)], Some(3)).unwrap();
    store.replace(&table).unwrap();
    assert_eq!(store.log_records(), 0);
    assert_eq!(loaded(&store, ShardId(7)), (vec![rec("new", 2, 5)], Some(3)));
    assert_eq!(loaded(&store, ShardId(8)), (vec![rec("keep", 1, 1)], None));
    store.commit(&[changes(7, vec![rec("later", 1, 1)], &[], Some(4))]).unwrap();
    drop(store);
    let store = RedbStore::open(db_path(&dir)).unwrap();
    assert_eq!(loaded(&store, ShardId(7)), (vec![rec("later", 1, 1), rec("new", 2, 5)], Some(4)));
}

#[test]
fn corrupt_log_record_fails_loads_and_folds_and_stays_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let store = RedbStore::open(&path).unwrap();
    store.commit(&[changes(1, vec![rec("a", 2, 1)], &[], Some(1))]).unwrap();
    store.commit(&[changes(2, vec![rec("b", 1, 1)], &[], None)]).unwrap();
    drop(store);

    // Bit rot in the record that holds only shard 2's changes.
    let (key, mut bad) = log_entries(&path).pop().unwrap();
    *bad.last_mut().unwrap() ^= 0x40;
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(COMMIT_LOG).unwrap().insert(key, bad.as_slice()).unwrap();
        txn.commit().unwrap();
    }
    // A tiny threshold: the commit below tries (and fails) to fold.
    let store = RedbStore::open(&path).unwrap().with_checkpoint_records(0);
    for shard in [1, 2, 3] {
        let err = store.load(ShardId(shard), &cfg()).unwrap_err();
        assert!(matches!(err, Error::Decode(DecodeError::ChecksumMismatch { .. })), "{shard}: {err:?}");
    }
    assert!(matches!(store.checkpoint(), Err(Error::Decode(_))));
    let replacement = GhostTable::from_records(ShardId(1), cfg(), [rec("z", 2, 1)], None).unwrap();
    assert!(matches!(store.replace(&replacement), Err(Error::Decode(_))));
    // The batch itself is durable; only the fold is held back.
    store.commit(&[changes(3, vec![rec("c", 1, 1)], &[], None)]).unwrap();
    assert_eq!(store.log_records(), 3);
    drop(store);
    let entries = log_entries(&path);
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[1], (key, bad));
}

#[test]
fn files_from_before_the_log_are_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert("format", b"vshard-ghosts/1".as_slice()).unwrap();
        let stub = vshard_ghosts::codec::encode_stub(&rec("a", 2, 1)).unwrap();
        txn.open_table(GHOSTS).unwrap().insert((1, "a"), stub.as_slice()).unwrap();
        txn.open_table(SHARD_META).unwrap().insert(1, (Some(4), 1)).unwrap();
        txn.commit().unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(loaded(&store, ShardId(1)), (vec![rec("a", 2, 1)], Some(4)));
    store.commit(&[changes(1, vec![rec("b", 2, 1)], &[], Some(5))]).unwrap();
    drop(store);
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(loaded(&store, ShardId(1)), (vec![rec("a", 2, 1), rec("b", 2, 1)], Some(5)));
    drop(store);
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let marker = txn.open_table(META).unwrap().get("format").unwrap().unwrap().value().to_vec();
    assert_eq!(marker, b"vshard-ghosts/2");
}
