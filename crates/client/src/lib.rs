//! The BuildKit client library: connecting to a daemon at an address as `buildctl` takes
//! it (`unix://PATH`, `tcp://HOST:PORT`), and turning the daemon's progress stream into
//! what `buildctl --progress=tty|plain|rawjson` prints.
//!
//! It holds no daemon-side code: `buildctl` builds without mounts or runc.
#![forbid(unsafe_code)]

mod connect;
pub mod progress;

pub use connect::{Address, ConnectError, connect};
