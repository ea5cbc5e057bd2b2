//! What dropping the last `GhostRuntime` clone without `shutdown` releases.

use super::sweeper::SweeperSlot;
use crate::writer::StoreWriter;
use actix::Arbiter;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Held by every clone of a runtime; its drop is the last clone's.
pub(crate) struct OnLastDrop {
    pub(crate) sweeper: Arc<Mutex<SweeperSlot>>,
    pub(crate) closed: Arc<AtomicBool>,
    pub(crate) arbiters: Arc<Mutex<Vec<Arbiter>>>,
    pub(crate) writer: Arc<Mutex<Option<StoreWriter>>>,
    pub(crate) extra: Arc<Mutex<Vec<super::OnShutdown>>>,
}

impl Drop for OnLastDrop {
    fn drop(&mut self) {
        // `shutdown` took the writer: everything is released already.
        let Some(writer) = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take() else {
            return;
        };
        tracing::warn!(
            "ghost runtime dropped without shutdown: releasing the store, unflushed changes may be lost"
        );
        self.closed.store(true, Ordering::SeqCst);
        for stop in std::mem::take(&mut *self.extra.lock().unwrap_or_else(PoisonError::into_inner)) {
            stop();
        }
        // Arbiters are told to stop, not joined: the drop may run on one of them.
        if let SweeperSlot::Running(_, Some(arbiter)) =
            std::mem::take(&mut *self.sweeper.lock().unwrap_or_else(PoisonError::into_inner))
        {
            arbiter.stop();
        }
        for a in std::mem::take(&mut *self.arbiters.lock().unwrap_or_else(PoisonError::into_inner)) {
            a.stop();
        }
        // The writer's own thread commits what is queued, closes the store and
        // ends; joining it is what makes the file free for the next open.
        writer.shutdown();
    }
}
