//! The ibverbs-shaped public API of softrdma.
//!
//! Not written yet: this crate is a placeholder so the workspace has its final
//! shape. Device, PD, MR, CQ, QP, SRQ and AH arrive with issue 4 ("verbs-api and
//! the softrdma device").
