//! A deterministic two-endpoint simulation: two [`Endpoint`]s joined by a
//! [`Network`] with fault knobs, stepped on a virtual clock (quinn-proto's
//! test `Pair`, for RDMA). The frames crossing it are real RoCEv2 bytes.

pub mod net;
pub mod workload;

use core::time::Duration;

use smoltcp::wire::EthernetAddress;
use verbs_api::transitions::required;
use verbs_api::{AccessFlags, Gid, Mtu, QpAttr, QpCap, QpState, QpType};

use crate::endpoint::Endpoint;
use crate::flow;
use crate::mem::RegionTable;
use crate::path::Path;
use crate::time::Instant;
pub use net::{NetConfig, NetStats, Network, Rng};

pub struct Sim {
    pub now: Instant,
    pub nodes: [Endpoint<RegionTable>; 2],
    pub net: Network,
    /// Print every frame sent and delivered to stderr (`sim --trace`).
    pub trace: bool,
    /// When set, every frame put on the wire, with its time and sender.
    pub tap: Option<Vec<(Instant, usize, Vec<u8>)>>,
    /// Egress shaping per node (transport::qos), on the virtual clock.
    pub shapers: [Option<crate::qos::Shaper>; 2],
    /// When a throttled node may send again.
    shaper_wake: [Option<Instant>; 2],
    buf: Vec<u8>,
}

fn brief(frame: &[u8]) -> String {
    match crate::wire::Frame::parse(frame) {
        Ok(f) => {
            let b = f.repr.ib.bth;
            let aeth = f.repr.ib.ext.aeth.map(|a| format!(" {:?} msn={}", a.syndrome, a.msn)).unwrap_or_default();
            format!(
                "{} qpn={:#x} psn={:#08x}{}{} len={}{}",
                b.opcode.name(),
                b.dest_qpn,
                b.psn,
                if b.ack_req { " A" } else { "" },
                aeth,
                f.repr.ib.payload_len,
                if f.icrc_ok() { "" } else { " BAD-ICRC" }
            )
        }
        Err(e) => format!("unparseable: {e}"),
    }
}

/// Transport parameters the connected QPs are brought up with.
#[derive(Debug, Clone, Copy)]
pub struct ConnectParams {
    pub mtu: Mtu,
    pub timeout: u8,
    pub retry_cnt: u8,
    pub rnr_retry: u8,
    pub min_rnr_timer: u8,
    pub max_rd_atomic: u8,
    pub max_dest_rd_atomic: u8,
    pub cap: QpCap,
    /// Initial send PSNs of the two sides (the peer's receive PSN follows).
    pub psn: [u32; 2],
    pub access: AccessFlags,
    pub qkey: u32,
    /// rxe's "retry_cnt 7 = forever" (see `Qp::set_rxe_retry_quirk`).
    pub rxe_retry_quirk: bool,
}

impl Default for ConnectParams {
    fn default() -> Self {
        ConnectParams {
            mtu: Mtu::M1024,
            timeout: 6,
            retry_cnt: 7,
            rnr_retry: 7,
            min_rnr_timer: 2,
            max_rd_atomic: 16,
            max_dest_rd_atomic: 16,
            cap: QpCap { max_send_wr: 1024, max_recv_wr: 1024, max_send_sge: 4, max_recv_sge: 4, max_inline_data: 256 },
            psn: [0x10_0000, 0xab_cdef],
            access: AccessFlags::all(),
            qkey: 0x1111_1111,
            rxe_retry_quirk: false,
        }
    }
}

/// The MAC and IPv4 address of simulated node `i`.
pub fn node_addr(i: usize) -> (EthernetAddress, Gid) {
    let mac = EthernetAddress([0x02, 0, 0, 0, 0, i as u8 + 1]);
    (mac, Gid::from_ipv4(core::net::Ipv4Addr::new(10, 0, 0, i as u8 + 1)))
}

/// The path from node `from` to node `1 - from`, for a flow between two QPNs.
pub fn path_between(from: usize, lqpn: u32, rqpn: u32, ud: bool) -> Path {
    let (smac, sgid) = node_addr(from);
    let (dmac, dgid) = node_addr(1 - from);
    let fl = flow::flow_label(lqpn, rqpn);
    Path {
        smac,
        dmac,
        vlan: None,
        sgid,
        dgid,
        traffic_class: 0,
        hop_limit: 64,
        flow_label: fl,
        udp_sport: if ud { flow::ud_udp_sport(lqpn) } else { flow::udp_sport_from_flow_label(fl) },
    }
}

impl Sim {
    pub fn new(net: NetConfig, seed: u64) -> Self {
        Sim {
            now: Instant::ZERO,
            nodes: [Endpoint::new(RegionTable::new()), Endpoint::new(RegionTable::new())],
            net: Network::new(net, seed),
            trace: false,
            tap: None,
            shapers: [None, None],
            shaper_wake: [None, None],
            buf: Vec::with_capacity(9000),
        }
    }

    /// Creates a QP of `t` on each node and brings both to RTS, connected to
    /// each other (UD QPs are simply brought up). Returns the two QPNs.
    pub fn connect(&mut self, t: QpType, p: &ConnectParams, srq: [Option<u32>; 2]) -> [u32; 2] {
        let q =
            [self.nodes[0].create_qp(t, 1, p.cap, false, srq[0]), self.nodes[1].create_qp(t, 1, p.cap, false, srq[1])];
        for i in 0..2 {
            let (l, r) = (q[i], q[1 - i]);
            let qp = self.nodes[i].qp_mut(l).expect("just created");
            qp.set_rxe_retry_quirk(p.rxe_retry_quirk);
            let mut a = QpAttr {
                qp_state: QpState::Init,
                pkey_index: 0,
                port_num: 1,
                qp_access_flags: p.access,
                qkey: p.qkey,
                ..QpAttr::default()
            };
            qp.modify(&a, required(t, QpState::Reset, QpState::Init), None).expect("RESET->INIT");
            a.qp_state = QpState::Rtr;
            a.path_mtu = p.mtu;
            a.dest_qp_num = r;
            a.rq_psn = p.psn[1 - i];
            a.max_dest_rd_atomic = p.max_dest_rd_atomic;
            a.min_rnr_timer = p.min_rnr_timer;
            let path = (t != QpType::Ud).then(|| path_between(i, l, r, false));
            let m = required(t, QpState::Init, QpState::Rtr);
            qp.modify(&a, m, path).expect("INIT->RTR");
            if t == QpType::Ud {
                // A UD QP has no connected peer; its MTU is the port's.
                qp.attr.path_mtu = p.mtu;
            }
            a.qp_state = QpState::Rts;
            a.sq_psn = p.psn[i];
            a.timeout = p.timeout;
            a.retry_cnt = p.retry_cnt;
            a.rnr_retry = p.rnr_retry;
            a.max_rd_atomic = p.max_rd_atomic;
            let m = required(t, QpState::Rtr, QpState::Rts);
            qp.modify(&a, m, None).expect("RTR->RTS");
        }
        q
    }

    /// One step: every endpoint sends what it can, due frames are delivered,
    /// and if nothing happened the clock jumps to the next event. Returns
    /// false when nothing is left to happen.
    pub fn step(&mut self) -> bool {
        let mut busy = false;
        for i in 0..2 {
            let vnow = core::time::Duration::from_nanos(self.now.as_nanos());
            loop {
                if let Some(s) = &mut self.shapers[i] {
                    if let Some(w) = s.gate(vnow) {
                        self.shaper_wake[i] = Some(self.now + w);
                        break;
                    }
                }
                if !self.nodes[i].poll_transmit(self.now, &mut self.buf) {
                    break;
                }
                if let Some(s) = &mut self.shapers[i] {
                    s.charge(self.buf.len(), crate::qos::ends_request(&self.buf));
                }
                if self.trace {
                    eprintln!("{:>12} {i}->  {}", self.now.as_nanos(), brief(&self.buf));
                }
                if let Some(tap) = &mut self.tap {
                    tap.push((self.now, i, self.buf.clone()));
                }
                self.net.send(self.now, 1 - i, &self.buf);
                busy = true;
            }
        }
        while let Some((dest, frame)) = self.net.pop_due(self.now) {
            let r = self.nodes[dest].handle_frame(self.now, &frame);
            if self.trace {
                eprintln!("{:>12}  ->{dest} {} {:?}", self.now.as_nanos(), brief(&frame), r.err());
            }
            busy = true;
        }
        if busy {
            return true;
        }
        let wake = self.shaper_wake.iter().flatten().copied().min();
        self.shaper_wake = [None, None];
        let next = [self.net.next_delivery(), self.nodes[0].poll_timeout(), self.nodes[1].poll_timeout(), wake]
            .into_iter()
            .flatten()
            .min();
        match next {
            Some(t) => {
                if t > self.now {
                    self.now = t;
                }
                for n in &mut self.nodes {
                    n.handle_timeout(self.now);
                }
                true
            }
            None => false,
        }
    }

    /// Steps until nothing is left to happen or `limit` of virtual time passed.
    pub fn run_until_idle(&mut self, limit: Duration) {
        let end = self.now + limit;
        while self.now < end && self.step() {}
    }
}
