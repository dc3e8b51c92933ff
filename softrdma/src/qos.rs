//! Device-enforced QoS: the shaper (transport::qos) per namespace, gated in
//! `engine::Shared::flush`; weighted round robin per QP in the endpoint.

pub use transport::qos::*;
