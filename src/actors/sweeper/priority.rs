//! The sweeper's own thread at the lowest scheduling priority the OS gives,
//! so that its work runs only on CPU time the foreground leaves.

use thread_priority::ThreadPriority;

/// How low the sweeper's thread went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lowered {
    /// Linux `SCHED_IDLE`: runs only when no other thread of any nice level wants the CPU.
    Idle,
    /// The normal policy at its lowest priority (nice 19 on Unix).
    Lowest,
    /// The OS refused both: the thread runs at the priority it had.
    Refused,
}

/// Lowers the calling thread: `SCHED_IDLE` where Linux allows it, else the
/// normal policy's lowest priority; a refusal is logged and the sweeper runs on.
pub(super) fn lower_this_thread() -> Lowered {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use thread_priority::ThreadSchedulePolicy;
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, set_thread_priority_and_policy, thread_native_id,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        match set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
            Ok(()) => return Lowered::Idle,
            Err(e) => tracing::debug!(error = ?e, "SCHED_IDLE refused; trying the lowest normal priority"),
        }
    }
    match thread_priority::set_current_thread_priority(ThreadPriority::Min) {
        Ok(()) => Lowered::Lowest,
        Err(e) => {
            tracing::warn!(
                error = ?e,
                "the OS refused to lower the sweeper's thread priority; it runs at its current priority"
            );
            Lowered::Refused
        }
    }
}
