//! The cases. Each is a function of an [`Env`](crate::kit::Env) written
//! against `verbs-api` only, with a dotted name (`group.what`) and the IBTA
//! chapter or rule it checks. Citations name chapters (IBTA InfiniBand
//! Architecture Specification Vol 1: ch. 9 transport layer, ch. 10 software
//! transport interface, ch. 11 software transport verbs; Annex A17 RoCEv2)
//! and, where the rule is ibverbs' rather than IBTA's, the ibverbs man page.

mod access;
mod device;
mod events;
mod pkey;
mod qp_state;
mod queues;
mod rc;
mod retry;
mod scale;
mod uc;
mod ud;

use crate::kit::CaseResult;

/// One named case.
#[derive(Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    pub citation: &'static str,
    pub run: fn(&crate::kit::Env) -> CaseResult,
}

pub(crate) const fn case(name: &'static str, citation: &'static str, run: fn(&crate::kit::Env) -> CaseResult) -> Case {
    Case { name, citation, run }
}

/// Every case, in run order.
pub fn all() -> Vec<Case> {
    let mut v = Vec::new();
    v.extend(device::cases());
    v.extend(qp_state::cases());
    v.extend(rc::cases());
    v.extend(access::cases());
    v.extend(retry::cases());
    v.extend(queues::cases());
    v.extend(events::cases());
    v.extend(uc::cases());
    v.extend(ud::cases());
    v.extend(pkey::cases());
    v.extend(scale::cases());
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_unique_and_cited() {
        let all = super::all();
        let mut names: Vec<_> = all.iter().map(|c| c.name).collect();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len(), "duplicate case names");
        assert!(all.iter().all(|c| !c.citation.is_empty()));
    }

    #[test]
    fn cases_do_not_use_softrdma() {
        for (f, src) in [
            ("access", include_str!("access.rs")),
            ("device", include_str!("device.rs")),
            ("events", include_str!("events.rs")),
            ("pkey", include_str!("pkey.rs")),
            ("qp_state", include_str!("qp_state.rs")),
            ("queues", include_str!("queues.rs")),
            ("rc", include_str!("rc.rs")),
            ("retry", include_str!("retry.rs")),
            ("scale", include_str!("scale.rs")),
            ("uc", include_str!("uc.rs")),
            ("ud", include_str!("ud.rs")),
            ("mod", include_str!("mod.rs")),
            ("kit", include_str!("../kit.rs")),
        ] {
            let (a, b) = (["use ", "softrdma"].concat(), ["softrdma", "::"].concat());
            assert!(!src.contains(&a) && !src.contains(&b), "{f}.rs names softrdma");
        }
    }
}
