//! Run, pause or stop: what the actor tells a running pass, and how the pass waits on it.

use std::time::Duration;
use tokio::sync::watch;

/// Whether passes may proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Control {
    Run,
    Pause,
    Stop,
}

/// Waits while paused; false once stopping.
pub(super) async fn running(control: &mut watch::Receiver<Control>) -> bool {
    loop {
        match *control.borrow_and_update() {
            Control::Run => return true,
            Control::Stop => return false,
            Control::Pause => {}
        }
        if control.changed().await.is_err() {
            return false;
        }
    }
}

/// Sleeps `d`, cut short by a stop; false once stopping.
pub(super) async fn pause(d: Duration, control: &mut watch::Receiver<Control>) -> bool {
    let deadline = tokio::time::sleep(d);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => return running(control).await,
            changed = control.changed() => {
                if changed.is_err() || *control.borrow() == Control::Stop {
                    return false;
                }
            }
        }
    }
}
