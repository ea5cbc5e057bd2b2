//! `RedbStore` through the public API: persistence across reopen, the `GhostStore`
//! contract (checked against `MemoryStore` too), foreign files, and corrupt rows.
//! The commit log has its own file, `store_redb_log.rs`.

#[allow(dead_code)] // each test file uses a different part of it
mod support;

use redb::{ReadableDatabase, TableDefinition};
use std::path::Path;
// The documented schema: stub rows, and per shard (applied seq, row count).
use support::redb_tables::{GHOSTS, META, SHARD_META};
use support::*;
use vshard_ghosts::store::{GhostStore, MemoryStore, RedbStore, ShardChanges};
use vshard_ghosts::table::GhostTable;
use vshard_ghosts::testing::{Fault, FaultyStore, StoreOp};
use vshard_ghosts::{EdgeEvents, Epoch, Error, ShardId};

fn new_redb(dir: &tempfile::TempDir) -> RedbStore {
    RedbStore::open(dir.path().join("ghosts.redb")).unwrap()
}

#[test]
fn memory_store_meets_the_contract() {
    for (name, check) in CHECKS {
        eprintln!("memory: {name}");
        check(&MemoryStore::new());
    }
}

#[test]
fn redb_store_meets_the_contract() {
    for (name, check) in CHECKS {
        eprintln!("redb: {name}");
        let dir = tempfile::tempdir().unwrap();
        check(&new_redb(&dir));
    }
}

#[test]
fn redb_store_meets_the_contract_while_checkpointing() {
    // 0: every commit is folded at once; 1: every second one, so that loads
    // see rows and log records together.
    for records in [0, 1] {
        for (name, check) in CHECKS {
            eprintln!("redb, checkpoint after {records} records: {name}");
            let dir = tempfile::tempdir().unwrap();
            check(&new_redb(&dir).with_checkpoint_records(records));
        }
    }
}

/// Each commit is one transaction: a cut fails it before it writes (`Some(0)`)
/// or after (a lost reply).
fn check_cuts<S: GhostStore>(store: S) {
    let s = FaultyStore::new(store);
    let cut = |k: Option<usize>| match k {
        None => s.clear(),
        Some(0) => s.inject(StoreOp::Commit, Fault::Fail),
        Some(_) => s.inject(StoreOp::Commit, Fault::ApplyThenFail),
    };
    let seen = commit_cut_between_parts_is_all_or_nothing(&s, &cut, &[0, 1, 2]);
    assert_eq!(seen, CutOutcomes { failed: 3, none: 1, all: 2 });
}

#[test]
fn commits_cut_short_are_all_or_nothing() {
    check_cuts(MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    check_cuts(new_redb(&dir));
}

// ---- redb only ----

#[test]
fn store_is_send_sync_static_and_named() {
    fn assert_store<S: GhostStore>() {}
    assert_store::<RedbStore>();
    let dir = tempfile::tempdir().unwrap();
    let s = new_redb(&dir);
    assert_eq!(s.kind(), "redb");
    assert_eq!(s.path(), dir.path().join("ghosts.redb"));
    assert!(s.file_size().unwrap() > 0);
}

#[test]
fn commits_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut table = GhostTable::new(ShardId(3), cfg()).unwrap();
    let store = new_redb(&dir);
    for i in 0..200u32 {
        table
            .insert(&format!("node-{i:04}"), ShardId(10 + (i % 5) as u16), i % 3 + 1, Epoch(1), 1_000)
            .unwrap();
    }
    store.commit(&[ShardChanges { shard: ShardId(3), changes: table.take_changes() }]).unwrap();
    for i in 0..50 {
        table.edge_removed(&format!("node-{i:04}")); // purges the refcount-1 ones
        table.edge_added(&format!("node-{:04}", 100 + i));
    }
    table.apply_batch(Some(42), &EdgeEvents::new());
    store.commit(&[ShardChanges { shard: ShardId(3), changes: table.take_changes() }]).unwrap();
    drop(store);

    let store = new_redb(&dir);
    let reloaded = store.load(ShardId(3), &cfg()).unwrap();
    assert_eq!(contents(&reloaded), contents(&table));
    assert_eq!(reloaded.applied_seq(), Some(42));
    assert!(!reloaded.has_changes());
}

#[test]
fn empty_file_becomes_a_store_and_missing_dir_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.redb");
    std::fs::write(&path, b"").unwrap();
    let s = RedbStore::open(&path).unwrap();
    s.commit(&[changes(0, vec![rec("a", 1, 1)], &[], None)]).unwrap();
    drop(s);
    assert_eq!(loaded(&RedbStore::open(&path).unwrap(), ShardId(0)).0, vec![rec("a", 1, 1)]);

    let err = RedbStore::open(dir.path().join("no/such/dir/ghosts.redb")).unwrap_err();
    assert!(matches!(err, Error::Store { .. }), "{err:?}");
}

#[test]
fn second_open_of_the_same_file_is_a_store_error() {
    let dir = tempfile::tempdir().unwrap();
    let _first = new_redb(&dir);
    let err = RedbStore::open(dir.path().join("ghosts.redb")).unwrap_err();
    assert!(matches!(err, Error::Store { .. }), "{err:?}");
}

#[test]
fn non_redb_file_is_not_a_store_and_stays_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    for (name, bytes) in
        [("random.bin", (0..8192).map(|_| rng.u8(..)).collect::<Vec<u8>>()), ("short.txt", b"hello".to_vec())]
    {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let err = RedbStore::open(&path).unwrap_err();
        assert!(matches!(err, Error::NotAStore(_)), "{name}: {err:?}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name}");
    }
}

#[test]
fn foreign_redb_database_is_not_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.redb");
    let other: TableDefinition<u64, u64> = TableDefinition::new("accounts");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(other).unwrap().insert(1, 2).unwrap();
        txn.commit().unwrap();
    }
    let err = RedbStore::open(&path).unwrap_err();
    assert!(matches!(err, Error::NotAStore(_)), "{err:?}");
    // Nothing was added to the foreign file.
    let db = redb::Database::open(&path).unwrap();
    let names: Vec<String> = db
        .begin_read()
        .unwrap()
        .list_tables()
        .unwrap()
        .map(|t| redb::TableHandle::name(&t).to_owned())
        .collect();
    assert_eq!(names, ["accounts"]);
}

#[test]
fn wrong_format_marker_is_not_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.redb");
    let meta = META;
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(meta).unwrap().insert("format", b"vshard-ghosts/99".as_slice()).unwrap();
        txn.commit().unwrap();
    }
    let err = RedbStore::open(&path).unwrap_err();
    assert!(matches!(err, Error::NotAStore(_)), "{err:?}");
}

/// Overwrites one row's value through redb directly, as bit rot or a bad tool would.
fn poke(path: &Path, shard: u16, id: &str, value: &[u8]) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(GHOSTS).unwrap().insert((shard, id), value).unwrap();
    txn.commit().unwrap();
}

fn peek(path: &Path, shard: u16, id: &str) -> Vec<u8> {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(GHOSTS).unwrap();
    table.get((shard, id)).unwrap().unwrap().value().to_vec()
}

#[test]
fn corrupt_row_fails_load_and_stays_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ghosts.redb");
    let store = RedbStore::open(&path).unwrap();
    let ups = (0..10).map(|i| rec(&format!("n{i}"), 2, 1)).collect();
    store.commit(&[changes(1, ups, &[], Some(1)), changes(2, vec![rec("ok", 1, 1)], &[], None)]).unwrap();
    store.checkpoint().unwrap();
    drop(store);

    let garbage = b"\x00garbage\xff not a stub".to_vec();
    poke(&path, 1, "n4", &garbage);
    let store = RedbStore::open(&path).unwrap();
    for _ in 0..2 {
        let err = store.load(ShardId(1), &cfg()).unwrap_err();
        assert!(matches!(err, Error::Decode(_)), "{err:?}");
    }
    assert!(store.export_snapshot(ShardId(1), &cfg()).is_err());
    assert_eq!(loaded(&store, ShardId(2)).0, vec![rec("ok", 1, 1)]);
    drop(store);
    assert_eq!(peek(&path, 1, "n4"), garbage);
}

#[test]
fn row_holding_another_ids_stub_fails_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ghosts.redb");
    let store = RedbStore::open(&path).unwrap();
    store.commit(&[changes(1, vec![rec("a", 2, 1), rec("b", 2, 1)], &[], None)]).unwrap();
    store.checkpoint().unwrap();
    drop(store);

    let b_bytes = peek(&path, 1, "b");
    poke(&path, 1, "a", &b_bytes);
    let err = RedbStore::open(&path).unwrap().load(ShardId(1), &cfg()).unwrap_err();
    assert!(matches!(err, Error::Decode(vshard_ghosts::DecodeError::Malformed(_))), "{err:?}");
    assert_eq!(peek(&path, 1, "a"), b_bytes);
}

#[test]
fn stored_row_count_is_only_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ghosts.redb");
    let store = RedbStore::open(&path).unwrap();
    store.commit(&[changes(1, vec![rec("a", 2, 1), rec("b", 2, 1)], &[], Some(5))]).unwrap();
    store.checkpoint().unwrap();
    drop(store);
    for bogus in [0, 1, u64::MAX] {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(SHARD_META).unwrap().insert(1, (Some(5), bogus)).unwrap();
        txn.commit().unwrap();
        drop(db);
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(loaded(&store, ShardId(1)), (vec![rec("a", 2, 1), rec("b", 2, 1)], Some(5)), "{bogus}");
    }
}

/// Loads of 2^16 stubs and more index on a helper thread while the rows are
/// read: every stub must still be found, in both stores, after a checkpoint
/// and with log records on top.
#[test]
fn large_loads_index_every_stub() {
    large_load(&MemoryStore::new(), &|| {});
    let dir = tempfile::tempdir().unwrap();
    let redb = new_redb(&dir);
    large_load(&redb, &|| redb.checkpoint().unwrap());
}

fn large_load(store: &dyn GhostStore, checkpoint: &dyn Fn()) {
    const N: u32 = 70_000;
    let ups = (0..N).map(|i| rec(&format!("big-{i}"), 3, i % 7 + 1)).collect();
    store.commit(&[changes(4, ups, &[], Some(1))]).unwrap();
    checkpoint();
    store.commit(&[changes(4, vec![rec("big-5", 9, 42)], &["big-6"], Some(2))]).unwrap();
    let mut t = store.load(ShardId(4), &cfg()).unwrap();
    assert_eq!(t.len(), N as usize - 1, "{}", store.kind());
    assert_eq!(t.applied_seq(), Some(2));
    for i in (0..N).filter(|&i| i != 6) {
        let g = t.get(&format!("big-{i}")).unwrap_or_else(|| panic!("{}: big-{i} lost", store.kind()));
        assert_eq!(g.refcount, if i == 5 { 42 } else { i % 7 + 1 });
    }
    assert_eq!(t.get("big-6"), None);
    // The index is live: a removal and an insert after the load work too.
    t.edge_removed("big-7");
    t.insert("big-new", ShardId(2), 1, Epoch(1), 0).unwrap();
    assert_eq!(t.resolve("big-new"), Some(ShardId(2)));
    assert_eq!(t.resolve("big-8"), Some(ShardId(3)));
}
