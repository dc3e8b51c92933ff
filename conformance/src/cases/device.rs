//! Device, port and resource basics.

use verbs_api::{AccessFlags, Mtu, PortState};

use super::{case, Case};
use crate::kit::{expect_err, CaseResult, Env, EBUSY, EINVAL};
use crate::{check, fail};

pub fn cases() -> Vec<Case> {
    vec![
        case("device.query", "IBTA Vol 1 ch. 11 (Query HCA, Query Port); Annex A17 (RoCEv2 GIDs)", query),
        case("device.pd_dealloc_busy", "IBTA Vol 1 ch. 11 (Deallocate Protection Domain)", pd_busy),
        case("device.cq_create", "IBTA Vol 1 ch. 11 (Create Completion Queue)", cq_create),
    ]
}

fn query(env: &Env) -> CaseResult {
    for c in [&env.a, &env.b] {
        let d = c.query_device();
        check!(d.phys_port_cnt >= 1, "{}: phys_port_cnt {}", c.device_name(), d.phys_port_cnt);
        check!(d.max_qp_wr > 0 && d.max_sge > 0 && d.max_cqe > 0, "{}: zero limits in {d:?}", c.device_name());
        let p = c.query_port(1)?;
        check!(p.state == PortState::Active, "{}: port 1 is {:?}", c.device_name(), p.state);
        check!(p.active_mtu <= p.max_mtu, "active MTU {:?} above max {:?}", p.active_mtu, p.max_mtu);
        check!(p.active_mtu >= Mtu::M256, "active MTU");
        check!(p.link_layer_ethernet, "RoCE port must have an Ethernet link layer");
        let gids = c.gid_table(1)?;
        check!(!gids.is_empty() && gids.len() as u32 <= p.gid_tbl_len, "GID table {gids:?} vs len {}", p.gid_tbl_len);
        let g = c.query_gid(1, env.gid_index as u32)?;
        check!(gids.iter().any(|e| e.gid == g), "query_gid({}) = {g} not in the GID table", env.gid_index);
        check!(p.pkey_tbl_len >= 1, "P_Key table empty");
        // IBTA Vol 1 ch. 10 (partitioning): index 0 of a port holds the default P_Key.
        check!(c.query_pkey(1, 0)? == 0xffff, "P_Key index 0 is {:#x}, expected 0xffff", c.query_pkey(1, 0)?);
        check!(c.query_port(0).is_err() && c.query_port(d.phys_port_cnt + 1).is_err(), "port numbers outside 1..=N");
        check!(c.query_pkey(1, p.pkey_tbl_len).is_err(), "P_Key index beyond the table accepted");
        check!(c.query_gid(1, p.gid_tbl_len + 16).is_err(), "GID index beyond the table accepted");
    }
    Ok(())
}

fn pd_busy(env: &Env) -> CaseResult {
    let pd = env.a.alloc_pd()?;
    let mr = pd.reg_mr(4096, AccessFlags::LOCAL_WRITE)?;
    expect_err(pd.dealloc(), EBUSY, "dealloc of a PD with an MR")?;
    mr.deregister()?;
    pd.dealloc()?;
    // The MR is gone: a second deregistration fails.
    check!(mr.deregister().is_err(), "second deregistration succeeded");
    // ibverbs: REMOTE_WRITE/REMOTE_ATOMIC need LOCAL_WRITE (ibv_reg_mr(3)).
    let pd = env.a.alloc_pd()?;
    expect_err(pd.reg_mr(64, AccessFlags::REMOTE_WRITE), EINVAL, "REMOTE_WRITE without LOCAL_WRITE")?;
    expect_err(pd.reg_mr(64, AccessFlags::REMOTE_ATOMIC), EINVAL, "REMOTE_ATOMIC without LOCAL_WRITE")?;
    pd.dealloc()?;
    Ok(())
}

fn cq_create(env: &Env) -> CaseResult {
    for n in [1u32, 7, 256] {
        let cq = env.a.create_cq(n)?;
        check!(cq.capacity() >= n, "create_cq({n}) has capacity {}", cq.capacity());
        check!(cq.poll(16).is_empty() && !cq.overflowed(), "fresh CQ not empty");
    }
    let max = env.a.query_device().max_cqe;
    if env.a.create_cq(max.saturating_add(1)).is_ok() {
        fail!("create_cq(max_cqe + 1) succeeded");
    }
    Ok(())
}
