//! `examples/cluster` stops every worker it started when interrupted: Ctrl-C
//! (SIGINT) to the parent mid-run leaves no worker process running.
//!
//! Needs `--features cluster`, `VSHARD_GHOSTS_ETCD=http://host:port`, and the
//! example built by the same profile first (`cargo build --release --features
//! cluster --example cluster`; `.ci/run` runs the example before this test).
#![cfg(feature = "cluster")]

#[allow(dead_code)] // each test file uses a different part of it
mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::etcd_endpoint;

/// The example's binary, beside this test's (`target/<profile>/examples/`).
fn example_binary() -> PathBuf {
    let me = std::env::current_exe().unwrap();
    let bin = me.parent().and_then(|deps| deps.parent()).unwrap().join("examples").join("cluster");
    assert!(
        bin.exists(),
        "build the example first: cargo build --release --features cluster --example cluster"
    );
    bin
}

/// The processes whose parent is `pid` (from `/proc/*/stat`).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state ppid …`: the command may hold spaces, not a ')'.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        if after.split_whitespace().nth(1).and_then(|p| p.parse().ok()) == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// True while `pid` runs (a zombie, ended but not yet reaped, does not).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')').map(|(_, r)| r.trim_start().chars().next()),
            Some(Some('Z' | 'X'))
        ),
        Err(_) => false,
    }
}

#[test]
fn ctrl_c_stops_every_worker_the_example_started() {
    let mut parent = Command::new(example_binary())
        .args(["--etcd", &etcd_endpoint(), "--shards", "6", "--batches", "1000000", "--kill-after", "999999"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let workers = loop {
        let w = children(parent.id());
        if w.len() == 3 {
            break w;
        }
        assert!(Instant::now() < deadline, "the workers did not start: {w:?}");
        assert!(parent.try_wait().unwrap().is_none(), "the example ended early");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(workers.iter().all(|&w| running(w)));
    let sent = Command::new("kill").args(["-INT", &parent.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = parent.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the example did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "an interrupted run does not pass");
    let left: Vec<u32> = workers.into_iter().filter(|&w| running(w)).collect();
    assert!(left.is_empty(), "workers still running after the parent stopped: {left:?}");
}
