//! The modify-QP rules (IBTA Vol 1 ch. 10, "QP state transition
//! properties") live in `verbs_api::transitions`, where bring-up code uses
//! the same table; the QP checks every modify against it.

pub use verbs_api::transitions::*;
