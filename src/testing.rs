//! Fault injection and a manual clock, for the crate's own tests and for hosts'
//! chaos drills (cargo feature `testing`, off by default: none of it is in a
//! production build).
//!
//! The sweep's steps can be driven by hand with it too:
//! [`PlanSweep::new`](crate::messages::PlanSweep::new) and
//! [`ApplyVerdicts::new`](crate::messages::ApplyVerdicts::new), and a shard's
//! panic path with [`InjectPanic`](crate::messages::InjectPanic).

pub use crate::clock::ManualClock;
pub use crate::store::faulty::{Fault, FaultyStore, StoreOp};
