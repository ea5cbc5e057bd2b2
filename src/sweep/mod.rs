//! The sweep, as data: plan → verify → apply.
//!
//! A shard *plans* a bounded page of ghosts that are due ([`PlannedCheck`]s in
//! a [`SweepPage`]); the sweeper asks the host's [`Verifier`]
//! about each one under its token bucket; the shard *applies* the answers
//! ([`CheckedVerdict`]s) by compare-and-set on each stub's version and reports
//! what it did ([`ApplyReport`]). A pass over every shard adds up to a
//! [`PassReport`], and passes to [`SweepTotals`].
//!
//! Everything here is pure: the sweeper actor and the tables move these values
//! around; nothing in this module does I/O or reads a clock.

pub(crate) mod adapt;
mod queue;
mod rate;
mod report;
pub(crate) mod verdict;
pub(crate) mod verify;

pub(crate) use queue::{Deferral, ShardQueue};
pub(crate) use rate::Rate;
pub use report::{PassReport, SweepCounts, SweepTotals};
pub use verdict::{ApplyReport, CheckedVerdict, PlannedCheck, SweepPage};
// The verifier seam is host-facing: its one public path is the crate root.
pub(crate) use verdict::{LocalEdges, Verdict};
pub(crate) use verify::{Verifier, VerifyRequest};
