//! `buildctl debug ...`: debug utilities.

pub mod dump_llb;
pub mod workers;
