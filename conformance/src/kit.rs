//! What every case uses: the environment it runs in, how it stops (fail or
//! skip), and small verbs helpers — two connected QPs, completions with a
//! deadline, SGEs, data patterns. Written against `verbs-api` only.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use verbs_api::helpers::{to_init, to_rts, ConnectOptions, PeerInfo};
use verbs_api::{
    AccessFlags, Ah, AhAttr, AsyncEvent, CompChannel, Context, Cq, Mr, Mtu, Pd, Qp, QpCap, QpInitAttr, QpState, QpType,
    RecvWr, SendOp, SendWr, Sge, Srq, VerbsError, WcStatus, WorkCompletion,
};

use crate::target::{Faults, Target};

/// Why a case stopped before passing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    Fail(String),
    Skip(String),
}

pub type CaseResult = Result<(), Stop>;

impl From<VerbsError> for Stop {
    fn from(e: VerbsError) -> Self {
        Stop::Fail(format!("unexpected verbs error: {e}"))
    }
}

impl From<(usize, VerbsError)> for Stop {
    fn from((i, e): (usize, VerbsError)) -> Self {
        Stop::Fail(format!("post refused work request #{i}: {e}"))
    }
}

/// Fails the case with a formatted message unless `cond` holds.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return ::core::result::Result::Err($crate::kit::Stop::Fail(format!($($fmt)*)));
        }
    };
}

/// Fails the case with a formatted message.
#[macro_export]
macro_rules! fail {
    ($($fmt:tt)*) => {
        return ::core::result::Result::Err($crate::kit::Stop::Fail(format!($($fmt)*)))
    };
}

/// Skips the case with a formatted reason.
#[macro_export]
macro_rules! skip {
    ($($fmt:tt)*) => {
        return ::core::result::Result::Err($crate::kit::Stop::Skip(format!($($fmt)*)))
    };
}

/// Where a case runs: two contexts of the target (`a` and `b`) and what the
/// network between them does.
pub struct Env {
    pub target: Arc<dyn Target>,
    pub a: Arc<dyn Context>,
    pub b: Arc<dyn Context>,
    /// The faults the run was configured with.
    pub faults: Faults,
    pub gid_index: u8,
    /// The smaller active MTU of the two ports: the path MTU of every connection.
    pub mtu: Mtu,
}

impl Env {
    pub fn new(target: Arc<dyn Target>) -> Result<Env, String> {
        let ctxs = target.contexts();
        if ctxs.len() < 2 {
            return Err(format!("target {} has {} devices, the suite needs two", target.name(), ctxs.len()));
        }
        let mut mtu = Mtu::M4096;
        for c in &ctxs[..2] {
            let p = c.query_port(1).map_err(|e| format!("{}: query_port(1): {e}", c.device_name()))?;
            mtu = mtu.min(p.active_mtu);
        }
        Ok(Env {
            faults: target.faults(),
            gid_index: target.gid_index(),
            a: ctxs[0].clone(),
            b: ctxs[1].clone(),
            target,
            mtu,
        })
    }

    /// Whether the network is clean (no configured faults).
    pub fn clean(&self) -> bool {
        self.faults.is_clean()
    }

    /// SKIPs the case under faults, with the reason it needs a clean network.
    pub fn require_clean(&self, why: &str) -> CaseResult {
        if self.clean() {
            Ok(())
        } else {
            Err(Stop::Skip(format!("needs a clean network ({why}); faults: {}", self.faults)))
        }
    }

    /// How long to wait for a completion that must come.
    pub fn timeout(&self) -> Duration {
        if self.clean() {
            Duration::from_secs(10)
        } else {
            Duration::from_secs(60)
        }
    }

    pub fn mtu_bytes(&self) -> usize {
        self.mtu.bytes()
    }

    /// Connection parameters: the path MTU, the target's GID index, and
    /// generous retries (the defaults of `ConnectOptions`) so that RC
    /// recovers from whatever faults are configured.
    pub fn opts(&self) -> ConnectOptions {
        ConnectOptions { mtu: self.mtu, sgid_index: self.gid_index, ..ConnectOptions::default() }
    }

    /// Temporarily changes the network faults; `Skip` if the target cannot.
    pub fn with_faults<T>(&self, f: Faults, body: impl FnOnce() -> Result<T, Stop>) -> Result<T, Stop> {
        if !self.target.set_faults(f) {
            return Err(Stop::Skip(format!("target {} cannot inject faults", self.target.name())));
        }
        let r = body();
        self.target.set_faults(self.faults);
        r
    }
}

/// Deterministic test data.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// How to build one side of a connection.
#[derive(Clone)]
pub struct Spec {
    pub qp_type: QpType,
    /// Bytes of the side's main MR.
    pub len: usize,
    pub mr_access: AccessFlags,
    pub cap: QpCap,
    pub cqe: u32,
    pub sq_sig_all: bool,
    pub opts: ConnectOptions,
    pub psn: u32,
    /// Receive from a new SRQ instead of the QP's receive queue.
    pub srq: bool,
    /// Make both CQs with one new completion channel (`Side::channel`).
    pub channel: bool,
}

impl Spec {
    pub fn new(env: &Env, qp_type: QpType) -> Spec {
        Spec {
            qp_type,
            len: 1 << 16,
            mr_access: AccessFlags::all(),
            cap: QpCap { max_send_wr: 64, max_recv_wr: 64, max_send_sge: 4, max_recv_sge: 4, max_inline_data: 256 },
            cqe: 256,
            sq_sig_all: false,
            opts: env.opts(),
            psn: 0x10,
            srq: false,
            channel: false,
        }
    }
}

/// One end: PD, send and receive CQ, a main MR, a QP (and maybe an SRQ).
/// Dropping it destroys the QP and SRQ, deregisters its MRs and frees the PD.
pub struct Side {
    pub ctx: Arc<dyn Context>,
    pub pd: Arc<dyn Pd>,
    pub scq: Arc<dyn Cq>,
    pub rcq: Arc<dyn Cq>,
    pub mr: Arc<dyn Mr>,
    pub qp: Arc<dyn Qp>,
    pub srq: Option<Arc<dyn Srq>>,
    /// The channel both CQs report to, with `Spec::channel`.
    pub channel: Option<Arc<dyn CompChannel>>,
    pub spec: Spec,
    extra: Mutex<Vec<Arc<dyn Mr>>>,
}

impl Side {
    pub fn new(ctx: &Arc<dyn Context>, spec: &Spec) -> Result<Side, Stop> {
        let pd = ctx.alloc_pd()?;
        let channel = if spec.channel { Some(ctx.create_comp_channel()?) } else { None };
        let cq = || match &channel {
            Some(ch) => ctx.create_cq_with_channel(spec.cqe, ch),
            None => ctx.create_cq(spec.cqe),
        };
        let (scq, rcq) = (cq()?, cq()?);
        let mr = pd.reg_mr(spec.len, spec.mr_access)?;
        let srq = if spec.srq { Some(pd.create_srq(spec.cap.max_recv_wr, spec.cap.max_recv_sge)?) } else { None };
        let qp = pd.create_qp(&QpInitAttr {
            qp_type: spec.qp_type,
            send_cq: scq.clone(),
            recv_cq: rcq.clone(),
            srq: srq.clone(),
            cap: spec.cap,
            sq_sig_all: spec.sq_sig_all,
        })?;
        let extra = Mutex::new(Vec::new());
        Ok(Side { ctx: ctx.clone(), pd, scq, rcq, mr, qp, srq, channel, spec: spec.clone(), extra })
    }

    pub fn info(&self, gid_index: u8) -> Result<PeerInfo, Stop> {
        Ok(PeerInfo { qpn: self.qp.qp_num(), psn: self.spec.psn, gid: self.ctx.query_gid(1, gid_index as u32)? })
    }

    /// Registers another MR under this side's PD (deregistered on drop).
    pub fn reg(&self, len: usize, access: AccessFlags) -> Result<Arc<dyn Mr>, Stop> {
        let mr = self.pd.reg_mr(len, access)?;
        self.extra.lock().unwrap_or_else(|e| e.into_inner()).push(mr.clone());
        Ok(mr)
    }

    /// An SGE into the main MR.
    pub fn sge(&self, off: usize, len: usize) -> Sge {
        sge(&self.mr, off, len)
    }

    pub fn post_recv(&self, wr_id: u64, off: usize, len: usize) -> CaseResult {
        let wr = RecvWr { wr_id, sg_list: vec![self.sge(off, len)] };
        match &self.srq {
            Some(s) => s.post_recv(&[wr])?,
            None => self.qp.post_recv(&[wr])?,
        }
        Ok(())
    }

    pub fn post(&self, wr: SendWr) -> CaseResult {
        self.qp.post_send(&[wr], None)?;
        Ok(())
    }

    pub fn state(&self) -> Result<QpState, Stop> {
        Ok(self.qp.query()?.qp_state)
    }

    /// Bytes of the main MR.
    pub fn read(&self, off: usize, len: usize) -> Result<Vec<u8>, Stop> {
        let mut v = vec![0u8; len];
        self.mr.read(off, &mut v)?;
        Ok(v)
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        let _ = self.qp.destroy();
        if let Some(s) = &self.srq {
            let _ = s.destroy();
        }
        let _ = self.mr.deregister();
        for m in self.extra.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = m.deregister();
        }
        let _ = self.pd.dealloc();
    }
}

pub fn sge(mr: &Arc<dyn Mr>, off: usize, len: usize) -> Sge {
    Sge { addr: mr.addr() + off as u64, length: len as u32, lkey: mr.lkey() }
}

/// Brings `x` to RTS towards `y` (RESET → INIT → RTR → RTS).
pub fn bring_up(env: &Env, x: &Side, y: &Side) -> CaseResult {
    let peer = y.info(env.gid_index)?;
    to_init(&x.qp, &x.spec.opts)?;
    to_rts(&x.qp, x.spec.psn, &peer, &x.spec.opts)?;
    Ok(())
}

/// Two sides on contexts `a` and `b`, connected (for UD: both at RTS).
pub fn connect(env: &Env, sa: &Spec, sb: &Spec) -> Result<(Side, Side), Stop> {
    let a = Side::new(&env.a, sa)?;
    let b = Side::new(&env.b, sb)?;
    bring_up(env, &a, &b)?;
    bring_up(env, &b, &a)?;
    Ok((a, b))
}

/// The usual pair: the same spec both ends, main MRs of `len` bytes.
pub fn pair(env: &Env, t: QpType, len: usize) -> Result<(Side, Side), Stop> {
    let mut s = Spec::new(env, t);
    s.len = len;
    let mut sb = s.clone();
    sb.psn = 0xabc;
    connect(env, &s, &sb)
}

/// A UD address handle on `from` towards `to`'s GID.
pub fn ah_to(env: &Env, from: &Side, to: &Side) -> Result<Arc<dyn Ah>, Stop> {
    let gid = to.ctx.query_gid(1, env.gid_index as u32)?;
    Ok(from.pd.create_ah(&AhAttr::new(gid, env.gid_index))?)
}

/// A signaled send work request.
pub fn wr(wr_id: u64, op: SendOp, sg_list: Vec<Sge>) -> SendWr {
    SendWr::new(wr_id, op, sg_list)
}

/// The next completion of `cq`, which must come within the env's timeout.
pub fn one(env: &Env, cq: &Arc<dyn Cq>, what: &str) -> Result<WorkCompletion, Stop> {
    match cq.wait(1, env.timeout()).first() {
        Some(wc) => Ok(*wc),
        None => Err(Stop::Fail(format!("{what}: no completion within {:?}", env.timeout()))),
    }
}

/// The next completion, which must have status `want`.
pub fn expect(env: &Env, cq: &Arc<dyn Cq>, want: WcStatus, what: &str) -> Result<WorkCompletion, Stop> {
    let wc = one(env, cq, what)?;
    if wc.status != want {
        return Err(Stop::Fail(format!(
            "{what}: completion status {:?} ({}), expected {:?}; wr_id {} vendor_err {}",
            wc.status,
            wc.status.as_str(),
            want,
            wc.wr_id,
            wc.vendor_err
        )));
    }
    Ok(wc)
}

/// For a WR the responder NAKs with a class C error (remote access, invalid
/// request): the completion must have status `want` — or, under faults,
/// RETRY_EXC_ERR. The NAK is sent once and the responder QP is in ERR from
/// then on, dropping retries; if the NAK is lost the requester can only
/// time out (IBTA Vol 1 ch. 9). Use with [`nak_spec`] requesters.
pub fn expect_nak(env: &Env, cq: &Arc<dyn Cq>, want: WcStatus, what: &str) -> Result<WorkCompletion, Stop> {
    if env.clean() {
        return expect(env, cq, want, what);
    }
    let wc = one(env, cq, what)?;
    if wc.status != want && wc.status != WcStatus::RetryExcErr {
        return Err(Stop::Fail(format!(
            "{what}: completion status {:?}, expected {want:?} (or RetryExcErr if the NAK was lost)",
            wc.status
        )));
    }
    Ok(wc)
}

/// An RC spec whose requester gives up after a bounded number of retries
/// (retry_cnt 5, below the 7 that the faults mode reads as unlimited;
/// timeout ≈ 16 ms) — for cases whose responder goes to ERR, see [`expect_nak`].
pub fn nak_spec(env: &Env) -> Spec {
    let mut s = Spec::new(env, QpType::Rc);
    s.opts.retry_cnt = 5;
    s.opts.timeout = 12;
    s
}

/// The next completion, which must be a success.
pub fn ok(env: &Env, cq: &Arc<dyn Cq>, what: &str) -> Result<WorkCompletion, Stop> {
    expect(env, cq, WcStatus::Success, what)
}

/// No completion may arrive within `d`.
pub fn quiet(cq: &Arc<dyn Cq>, d: Duration, what: &str) -> CaseResult {
    match cq.wait(1, d).first() {
        None => Ok(()),
        Some(wc) => Err(Stop::Fail(format!("{what}: unexpected completion {wc:?}"))),
    }
}

/// Waits for the QP to reach `want` (errors move QPs asynchronously).
pub fn wait_state(env: &Env, qp: &Arc<dyn Qp>, want: QpState, what: &str) -> CaseResult {
    let deadline = Instant::now() + env.timeout();
    loop {
        let s = qp.query()?.qp_state;
        if s == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Stop::Fail(format!("{what}: QP in {s:?}, expected {want:?}")));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Consumes `ctx`'s async events until one satisfies `pred` (or `d` passes).
pub fn wait_event(ctx: &Arc<dyn Context>, d: Duration, pred: impl Fn(&AsyncEvent) -> bool) -> Option<AsyncEvent> {
    let deadline = Instant::now() + d;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match ctx.get_async_event(left) {
            Some(e) if pred(&e) => return Some(e),
            Some(_) => {}
            None => return None,
        }
    }
}

/// Expects `r` to be an error of the kind `want` names ("EINVAL" …).
pub fn expect_err<T>(r: Result<T, VerbsError>, errno: i32, what: &str) -> CaseResult {
    match r {
        Ok(_) => Err(Stop::Fail(format!("{what}: accepted, expected errno {errno}"))),
        Err(e) if e.errno() == errno => Ok(()),
        Err(e) => Err(Stop::Fail(format!("{what}: {e}, expected errno {errno}"))),
    }
}

pub const EINVAL: i32 = 22;
pub const ENOMEM: i32 = 12;
pub const EBUSY: i32 = 16;

/// Finds `pkey` in the P_Key table of `ctx`'s port 1.
pub fn find_pkey(ctx: &Arc<dyn Context>, pkey: u16) -> Result<Option<u16>, Stop> {
    let n = ctx.query_port(1)?.pkey_tbl_len;
    for i in 0..n {
        if ctx.query_pkey(1, i).ok() == Some(pkey) {
            return Ok(Some(i));
        }
    }
    Ok(None)
}
