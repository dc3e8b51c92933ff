//! softrdma: a userspace soft-RDMA (RoCEv2) device.
//!
//! - [`device::Device`] — a device on a [`link::Link`]; `context()` gives the
//!   `verbs-api` entry point.
//! - [`backend`] — links: the in-memory fabric and TAP devices in network
//!   namespaces, and the small IP host (ARP/ND/ICMP) a device is on its L2.
//! - [`engine`] — drives the sans-IO transport with threads and timers.
//! - [`capture`], [`decode`] — pcap/pcapng I/O and `softrdma decode`.

pub mod args;
pub mod audit;
pub mod backend;
pub mod busy_poll;
pub mod capture;
pub mod channel;
pub mod control;
pub mod core_lock;
pub mod cq;
pub mod decode;
pub mod demo;
pub mod device;
pub mod engine;
pub mod gid;
pub mod icrc_engine;
pub mod lent;
pub mod link;
pub mod mr;
pub mod namespace;
pub mod pingpong;
pub mod qos;
pub mod testbed;
pub mod turn_trace;
pub mod verbs;
pub mod view;
