//! The sans-IO core of softrdma.
//!
//! Nothing in this crate reads a clock, opens a socket or spawns a thread: bytes,
//! time and randomness come in as arguments, so every behaviour can be replayed
//! deterministically in a simulation.
//!
//! - [`wire`]: checked views and `Repr` parse/emit types for every header of a
//!   RoCEv2 (and RoCEv1) frame, and the ICRC.
//! - [`psn`]: 24-bit packet sequence number arithmetic.

// Denied, not forbidden: `code_page` places the ICRC's loops (see there).
#![deny(unsafe_code)]

mod code_page;
pub mod psn;
pub mod wire;

pub mod counters;
pub mod endpoint;
pub mod flow;
pub mod mem;
pub mod path;
pub mod policy;
pub mod qos;
pub mod qp;
pub mod sim;
pub mod srq;
pub mod time;
