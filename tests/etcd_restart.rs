//! etcd killed in the middle of a stream of flushes and started again: nothing acknowledged is
//! lost, nothing is acknowledged that was not written, and the shards write again afterwards.
//!
//! The test runs its own etcd (the `etcd` binary on `PATH`, Debian's
//! `etcd-server`) on free loopback ports with a temporary data folder, and
//! says so and passes when there is none. Needs `--features etcd`.
#![cfg(feature = "etcd")]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vshard_ghosts::messages::InsertGhost;
use vshard_ghosts::store::*;
use vshard_ghosts::*;

/// An etcd server owned by the test: killed when dropped.
struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client: u16,
    peer: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Etcd {
    fn start() -> Option<Self> {
        let mut etcd =
            Self { child: None, dir: tempfile::tempdir().unwrap(), client: free_port(), peer: free_port() };
        etcd.spawn().ok()?;
        Some(etcd)
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let (c, p) = (format!("http://127.0.0.1:{}", self.client), format!("http://127.0.0.1:{}", self.peer));
        let child = Command::new("etcd")
            .args(["--name", "restart-test", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &c, "--advertise-client-urls", &c])
            .args(["--listen-peer-urls", &p, "--initial-advertise-peer-urls", &p])
            .args(["--initial-cluster", &format!("restart-test={p}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.client)).is_err() {
            assert!(Instant::now() < deadline, "etcd did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Kills the server as a crash would (SIGKILL): only what etcd synced survives.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Default)]
struct Acks {
    /// (shard, id, edge acknowledged too)
    acked: Vec<(u16, String, bool)>,
    errors: u64,
    /// Issued before the kill, acknowledged only once etcd was back: they
    /// were in flight (in a flush) when etcd died.
    spanned: u64,
    /// Issued after the restart.
    after_restart: u64,
}

/// Where the run is: etcd up, killed, restarted.
const UP: u8 = 0;
const KILLED: u8 = 1;
const RESTARTED: u8 = 2;

#[actix::test]
async fn etcd_killed_mid_flush_loses_nothing_acknowledged() {
    let Some(mut etcd) = Etcd::start() else {
        eprintln!("skipped: no `etcd` binary on PATH (apt-get install etcd-server)");
        return;
    };
    let config = EtcdConfig {
        prefix: "restart-test/".into(),
        owner_id: "writer".into(),
        lease_ttl_secs: 10,
        op_timeout: Duration::from_secs(1),
        retries: 40,
        retry_delay: Duration::from_millis(50),
        retry_delay_cap: Duration::from_millis(500),
        ..EtcdConfig::default()
    };
    let ep = etcd.endpoint();
    let store = {
        let (ep, config) = (ep.clone(), config.clone());
        tokio::task::spawn_blocking(move || EtcdStore::connect([ep], config)).await.unwrap().unwrap()
    };
    let rt = Arc::new(
        GhostRuntime::builder()
            .shards((0..4).map(ShardId))
            .arbiters(2)
            .store(StoreChoice::Custom(Arc::new(store)))
            .start()
            .unwrap(),
    );
    let acks = Arc::new(Mutex::new(Acks::default()));
    let phase = Arc::new(AtomicU8::new(UP));
    let stop = Instant::now() + Duration::from_secs(8);
    let writers: Vec<_> = (0..4u16)
        .map(|shard| {
            let (rt, acks, phase) = (rt.clone(), acks.clone(), phase.clone());
            actix::spawn(async move {
                let mut i = 0u32;
                while Instant::now() < stop {
                    i += 1;
                    let id = format!("s{shard}-{i}");
                    let issued = phase.load(Ordering::Acquire);
                    if rt
                        .insert_ghost(
                            ShardId(shard),
                            InsertGhost {
                                node_id: id.as_str().into(),
                                target: ShardId((shard + 1) % 4),
                                refcount: 1,
                                epoch: Epoch(1),
                            },
                        )
                        .await
                        .is_err()
                    {
                        acks.lock().unwrap().errors += 1;
                        continue;
                    }
                    let edge = rt.edge_added(ShardId(shard), &id).await.is_ok();
                    let mut a = acks.lock().unwrap();
                    a.acked.push((shard, id, edge));
                    a.spanned += u64::from(issued == UP && phase.load(Ordering::Acquire) == RESTARTED);
                    a.after_restart += u64::from(issued == RESTARTED);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = acks.lock().unwrap().acked.len();
    assert!(before > 0, "no write went through before the kill");
    etcd.kill();
    phase.store(KILLED, Ordering::Release);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // Nothing can complete while etcd is down: whatever completes from here on
    // waited for the restart.
    phase.store(RESTARTED, Ordering::Release);
    etcd = tokio::task::spawn_blocking(move || {
        etcd.spawn().unwrap();
        etcd
    })
    .await
    .unwrap();
    for w in writers {
        w.await.unwrap();
    }
    rt.shutdown().await.unwrap();

    let a = std::mem::take(&mut *acks.lock().unwrap());
    eprintln!(
        "acknowledged {} ({before} before the kill, {} in flight across it, {} issued after the restart), {} errors",
        a.acked.len(),
        a.spanned,
        a.after_restart,
        a.errors
    );
    assert!(a.spanned > 0, "no write was in flight when etcd died");
    assert!(a.after_restart > 0, "the shards never wrote again after etcd came back");
    let successor = EtcdConfig { owner_id: "checker".into(), ..config };
    let check = tokio::task::spawn_blocking(move || {
        let store = EtcdStore::connect([ep], successor).unwrap();
        let tables: Vec<_> =
            (0..4).map(|s| store.load(ShardId(s), &TableConfig::default()).unwrap()).collect();
        store.release_all().unwrap();
        tables
    });
    let tables = check.await.unwrap();
    for (shard, id, edge) in a.acked {
        let g = tables[shard as usize].get(&id).unwrap_or_else(|| panic!("acknowledged {id} lost"));
        // An unacknowledged edge may or may not have landed; an acknowledged one must have.
        assert!(g.refcount == 2 || (!edge && g.refcount == 1), "{id}: refcount {}", g.refcount);
    }
    drop(etcd);
}
