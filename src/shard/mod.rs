//! One shard apart from any runtime: its pure core and every promise it
//! makes (the actor drives it).
#![allow(dead_code)] // Parts only the actor uses.
mod core;
mod effects;
mod flush;
mod restart;
mod seq;
mod state;

pub(crate) use core::ShardCore;
pub(crate) use effects::{Effect, Token};

pub(crate) use effects::Restart;
pub(crate) use flush::Answer;
