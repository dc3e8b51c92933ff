//! Link backends and the host stack behind them.

pub mod host;
pub mod memory;
pub mod netns;
pub mod netns_reaper;
pub mod tap;
pub mod vnet;
