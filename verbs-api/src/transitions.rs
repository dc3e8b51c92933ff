//! The modify-QP rules: which state transitions exist and which attributes
//! each one requires or permits, per transport service — IBTA Vol 1 §10.3
//! ("QP state transition properties"; the kernel encodes the same
//! table as `qp_state_table` in drivers/infiniband/core/verbs.c).

use crate::{QpAttrMask as M, QpState, QpType};

/// Required and optional attributes of one transition for one QP type.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub required: M,
    pub optional: M,
}

const fn r(required: u32, optional: u32) -> Option<Rule> {
    Some(Rule { required: M(required), optional: M(optional) })
}

const CUR_STATE: u32 = M::CUR_STATE.0;
const SQD_NOTIFY: u32 = M::EN_SQD_ASYNC_NOTIFY.0;
const ACCESS: u32 = M::ACCESS_FLAGS.0;
const PKEY: u32 = M::PKEY_INDEX.0;
const PORT: u32 = M::PORT.0;
const QKEY: u32 = M::QKEY.0;
const AV: u32 = M::AV.0;
const MTU: u32 = M::PATH_MTU.0;
const TIMEOUT: u32 = M::TIMEOUT.0;
const RETRY: u32 = M::RETRY_CNT.0;
const RNR_RETRY: u32 = M::RNR_RETRY.0;
const RQ_PSN: u32 = M::RQ_PSN.0;
const RD_ATOMIC: u32 = M::MAX_QP_RD_ATOMIC.0;
const ALT: u32 = M::ALT_PATH.0;
const MIN_RNR: u32 = M::MIN_RNR_TIMER.0;
const SQ_PSN: u32 = M::SQ_PSN.0;
const DEST_RD_ATOMIC: u32 = M::MAX_DEST_RD_ATOMIC.0;
const MIG: u32 = M::PATH_MIG_STATE.0;
const DEST_QPN: u32 = M::DEST_QPN.0;

/// The rule for `from → to` on a QP of type `t`, or `None` if IBTA has no such
/// transition. `STATE` itself is always required and not listed.
pub fn rule(t: QpType, from: QpState, to: QpState) -> Option<Rule> {
    use QpState::*;
    use QpType::*;
    match (from, to) {
        // Any state may go to RESET or ERR, with nothing else.
        (_, Reset) | (_, Err) => r(0, 0),
        (Reset, Init) => match t {
            Ud => r(PKEY | PORT | QKEY, 0),
            Rc | Uc => r(PKEY | PORT | ACCESS, 0),
        },
        (Init, Init) => match t {
            Ud => r(0, PKEY | PORT | QKEY),
            Rc | Uc => r(0, PKEY | PORT | ACCESS),
        },
        (Init, Rtr) => match t {
            Ud => r(0, PKEY | QKEY),
            Uc => r(AV | MTU | DEST_QPN | RQ_PSN, ALT | ACCESS | PKEY),
            Rc => r(AV | MTU | DEST_QPN | RQ_PSN | DEST_RD_ATOMIC | MIN_RNR, ALT | ACCESS | PKEY),
        },
        (Rtr, Rts) => match t {
            Ud => r(SQ_PSN, CUR_STATE | QKEY),
            Uc => r(SQ_PSN, CUR_STATE | ALT | ACCESS | MIG),
            Rc => r(TIMEOUT | RETRY | RNR_RETRY | SQ_PSN | RD_ATOMIC, CUR_STATE | ALT | ACCESS | MIN_RNR | MIG),
        },
        (Rts, Rts) | (Sqd, Rts) => match t {
            Ud => r(0, CUR_STATE | QKEY),
            Uc => r(0, CUR_STATE | ACCESS | ALT | MIG),
            Rc => r(0, CUR_STATE | ACCESS | ALT | MIG | MIN_RNR),
        },
        (Rts, Sqd) => r(0, SQD_NOTIFY),
        (Sqd, Sqd) => match t {
            Ud => r(0, PKEY | QKEY),
            Uc => r(0, AV | ALT | ACCESS | PKEY | MIG),
            Rc => r(
                0,
                PORT | AV
                    | TIMEOUT
                    | RETRY
                    | RNR_RETRY
                    | RD_ATOMIC
                    | DEST_RD_ATOMIC
                    | ALT
                    | ACCESS
                    | PKEY
                    | MIN_RNR
                    | MIG,
            ),
        },
        // SQE is left only by UD and UC (an RC send-queue error takes the QP to ERR).
        (Sqe, Rts) => match t {
            Ud => r(0, CUR_STATE | QKEY),
            Uc => r(0, CUR_STATE | ACCESS),
            Rc => None,
        },
        _ => None,
    }
}

/// Why a modify was refused (`ibv_modify_qp` returns EINVAL for all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModifyError {
    NoSuchTransition {
        from: QpState,
        to: QpState,
    },
    MissingAttributes(M),
    UnexpectedAttributes(M),
    /// CUR_STATE named a state the QP is not in.
    CurrentStateMismatch {
        claimed: QpState,
        actual: QpState,
    },
    InvalidValue(&'static str),
}

impl core::fmt::Display for ModifyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ModifyError::NoSuchTransition { from, to } => {
                write!(f, "no QP transition {from:?} -> {to:?}")
            }
            ModifyError::MissingAttributes(m) => write!(f, "transition requires attributes {m:?}"),
            ModifyError::UnexpectedAttributes(m) => {
                write!(f, "transition does not permit attributes {m:?}")
            }
            ModifyError::CurrentStateMismatch { claimed, actual } => {
                write!(f, "cur_qp_state {claimed:?} but the QP is in {actual:?}")
            }
            ModifyError::InvalidValue(what) => write!(f, "invalid attribute value: {what}"),
        }
    }
}

impl std::error::Error for ModifyError {}

/// Exactly the attributes (with `STATE`) a `from → to` modify must carry:
/// what bring-up code passes, so no caller keeps its own copy of the table.
/// A transition IBTA lacks yields `STATE` alone, which `check` then refuses.
pub fn required(t: QpType, from: QpState, to: QpState) -> M {
    M::STATE.union(rule(t, from, to).map_or(M::NONE, |r| r.required))
}

/// Checks a modify request's mask against the table.
pub fn check(t: QpType, from: QpState, to: QpState, mask: M) -> Result<(), ModifyError> {
    let rule = rule(t, from, to).ok_or(ModifyError::NoSuchTransition { from, to })?;
    let given = mask.minus(M::STATE);
    let missing = rule.required.minus(given);
    if !missing.is_empty() {
        return Err(ModifyError::MissingAttributes(missing));
    }
    let extra = given.minus(rule.required).minus(rule.optional);
    if !extra.is_empty() {
        return Err(ModifyError::UnexpectedAttributes(extra));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use QpState::*;
    use QpType::*;

    #[test]
    fn required_is_the_table_plus_state() {
        assert_eq!(required(Ud, Rtr, Rts), M::STATE | M::SQ_PSN);
        assert_eq!(required(Uc, Reset, Init), M::STATE | M::PKEY_INDEX | M::PORT | M::ACCESS_FLAGS);
        for t in [Rc, Uc, Ud] {
            for (from, to) in [(Reset, Init), (Init, Rtr), (Rtr, Rts)] {
                assert_eq!(check(t, from, to, required(t, from, to)), Ok(()));
            }
        }
    }

    #[test]
    fn rc_bring_up_needs_exactly_the_ibta_attributes() {
        assert_eq!(check(Rc, Reset, Init, M::STATE | M::PKEY_INDEX | M::PORT | M::ACCESS_FLAGS), Ok(()));
        assert_eq!(
            check(Rc, Reset, Init, M::STATE | M::PKEY_INDEX | M::PORT),
            Result::Err(ModifyError::MissingAttributes(M::ACCESS_FLAGS))
        );
        assert_eq!(
            check(Rc, Reset, Init, M::STATE | M::PKEY_INDEX | M::PORT | M::ACCESS_FLAGS | M::SQ_PSN),
            Result::Err(ModifyError::UnexpectedAttributes(M::SQ_PSN))
        );
        let rtr = M::STATE | M::AV | M::PATH_MTU | M::DEST_QPN | M::RQ_PSN | M::MAX_DEST_RD_ATOMIC | M::MIN_RNR_TIMER;
        assert_eq!(check(Rc, Init, Rtr, rtr), Ok(()));
        assert_eq!(
            check(Rc, Init, Rtr, rtr.minus(M::MIN_RNR_TIMER)),
            Result::Err(ModifyError::MissingAttributes(M::MIN_RNR_TIMER))
        );
        // UC has no RDMA READ/atomics, so no responder resources to set.
        assert_eq!(
            check(Uc, Init, Rtr, rtr),
            Result::Err(ModifyError::UnexpectedAttributes(M::MAX_DEST_RD_ATOMIC | M::MIN_RNR_TIMER))
        );
        let rts = M::STATE | M::TIMEOUT | M::RETRY_CNT | M::RNR_RETRY | M::SQ_PSN | M::MAX_QP_RD_ATOMIC;
        assert_eq!(check(Rc, Rtr, Rts, rts), Ok(()));
        assert_eq!(check(Ud, Rtr, Rts, M::STATE | M::SQ_PSN), Ok(()));
    }

    #[test]
    fn impossible_transitions_are_refused() {
        for (from, to) in [(Reset, Rtr), (Reset, Rts), (Init, Rts), (Rtr, Init), (Err, Rts), (Rts, Init), (Sqe, Sqd)] {
            assert!(check(Rc, from, to, M::STATE).is_err(), "{from:?}->{to:?}");
        }
        assert_eq!(check(Rc, Sqe, Rts, M::STATE), Result::Err(ModifyError::NoSuchTransition { from: Sqe, to: Rts }));
        assert_eq!(check(Uc, Sqe, Rts, M::STATE), Ok(()));
        for from in [Reset, Init, Rtr, Rts, Sqd, Sqe, Err] {
            assert_eq!(check(Rc, from, Err, M::STATE), Ok(()));
            assert_eq!(check(Ud, from, Reset, M::STATE), Ok(()));
        }
    }
}
