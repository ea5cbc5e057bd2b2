//! The sweeper's own thread runs at the OS's lowest priority, as the OS itself
//! reports it (`/proc/self/task/<tid>/stat`: the scheduling policy, 5 being
//! `SCHED_IDLE`, and the nice level); a sweeper that shares its caller's
//! arbiter lowers nothing. One test in this binary, so that no other test's
//! threads come and go while it counts.

#![cfg(target_os = "linux")]

use std::sync::Arc;
use vshard_ghosts::*;

const SCHED_IDLE: i64 = 5;

/// The threads of this process the OS runs at the lowest priority.
fn lowered_threads() -> Vec<String> {
    let mut lowered = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let tid = task.unwrap().file_name().to_string_lossy().into_owned();
        let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
            continue; // ended meanwhile
        };
        // Fields after the command's closing parenthesis start at field 3 (state).
        let fields: Vec<i64> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let (nice, policy) = (fields[19 - 4], fields[41 - 4]);
        if policy == SCHED_IDLE || nice == 19 {
            lowered.push(tid);
        }
    }
    lowered
}

fn runtime(arbiters: usize) -> GhostRuntime {
    let config = RuntimeConfig { shards: vec![ShardId(0), ShardId(1)], arbiters, ..RuntimeConfig::default() };
    GhostRuntime::builder().config(config).store(StoreChoice::Memory).start().unwrap()
}

#[actix::test]
async fn the_sweepers_own_thread_runs_at_the_lowest_priority_and_no_other_does() {
    let verifier = Arc::new(DirectoryVerifier::new());
    assert_eq!(lowered_threads(), Vec::<String>::new(), "nothing is lowered before a sweeper starts");

    let rt = runtime(2);
    rt.start_sweeper(verifier.clone(), SweeperConfig::default()).unwrap();
    // Answered after the actor's start, where it lowers its thread.
    let totals = rt.sweep_totals().await.unwrap();
    assert!(totals.lowest_priority, "an unprivileged thread may always lower itself");
    assert_eq!(lowered_threads().len(), 1, "exactly the sweeper's thread");
    rt.stop_sweeper().await.unwrap();
    // The stop joined the thread; but the kernel wakes a joiner (it clears the
    // thread's tid) a moment before it removes the task from /proc, so the
    // ended thread may still be listed briefly: wait for the kernel, bounded.
    let mut left = lowered_threads();
    for _ in 0..500 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        left = lowered_threads();
    }
    assert_eq!(left, Vec::<String>::new(), "its thread ended with it");
    rt.shutdown().await.unwrap();

    // On the caller's arbiter: the caller's thread keeps its priority.
    let rt = runtime(0);
    rt.start_sweeper(verifier, SweeperConfig::default()).unwrap();
    assert!(!rt.sweep_totals().await.unwrap().lowest_priority);
    assert_eq!(lowered_threads(), Vec::<String>::new());
    rt.stop_sweeper().await.unwrap();
    rt.shutdown().await.unwrap();
}
