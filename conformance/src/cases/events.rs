//! Completion events: arming a CQ (`ibv_req_notify_cq`), completion
//! channels and their fd, solicited events, acknowledging events.

use std::sync::Arc;
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use verbs_api::{
    CompChannel, Cq, QpAttr, QpAttrMask, QpPath, QpState, QpType, SendFlags, SendOp, SendWr, WcOpcode, WcStatus,
};

use super::{case, Case};
use crate::kit::{connect, expect, expect_err, ok, CaseResult, Env, Side, Spec, Stop, EBUSY, EINVAL};
use crate::{check, fail};

const NOTIFY: &str = "IBTA Vol 1 ch. 11 (Request Completion Notification: an event for the next completion, once per request); ibv_req_notify_cq(3), ibv_get_cq_event(3)";
const SOLICITED: &str = "IBTA Vol 1 ch. 9 (BTH SE bit), ch. 11 (Request Completion Notification, solicited: a receive of a message with SE set, or an unsuccessful completion); ibv_req_notify_cq(3)";

pub fn cases() -> Vec<Case> {
    vec![
        case("cq.event_next", NOTIFY, event_next),
        case("cq.event_solicited", SOLICITED, event_solicited),
        case("ud.event_solicited", SOLICITED, ud_event_solicited),
        case("cq.event_fd", "ibv_create_comp_channel(3) (the channel's fd is readable while an event waits)", event_fd),
        case(
            "cq.channel_lifecycle",
            "ibv_create_comp_channel(3) (EBUSY while CQs use the channel), ibv_create_cq(3), ibv_ack_cq_events(3)",
            channel_lifecycle,
        ),
    ]
}

/// How long an event that must not come is waited for.
const QUIET: Duration = Duration::from_millis(60);

fn channel_pair(env: &Env, t: QpType) -> Result<(Side, Side), Stop> {
    let mut s = Spec::new(env, t);
    s.channel = true;
    let mut sb = s.clone();
    sb.psn = 0xabc;
    connect(env, &s, &sb)
}

fn channel(side: &Side) -> &Arc<dyn CompChannel> {
    side.channel.as_ref().expect("Spec::channel set")
}

/// The next event of `side`'s channel, which must be for `want` (and is acknowledged).
fn event_for(env: &Env, side: &Side, want: &Arc<dyn Cq>, what: &str) -> CaseResult {
    let Some(cq) = channel(side).get_cq_event(env.timeout()) else {
        fail!("{what}: no CQ event within {:?}", env.timeout());
    };
    check!(cq.handle() == want.handle(), "{what}: event for CQ {}, expected CQ {}", cq.handle(), want.handle());
    cq.ack_events(1)?;
    Ok(())
}

fn no_event(side: &Side, what: &str) -> CaseResult {
    if let Some(cq) = channel(side).get_cq_event(QUIET) {
        let _ = cq.ack_events(1);
        fail!("{what}: unexpected event for CQ {}", cq.handle());
    }
    Ok(())
}

fn send(a: &Side, id: u64, op: SendOp, solicited: bool) -> CaseResult {
    let mut w = SendWr::new(id, op, vec![a.sge(0, 16)]);
    if solicited {
        w.flags = w.flags | SendFlags::SOLICITED;
    }
    a.post(w)
}

fn event_next(env: &Env) -> CaseResult {
    let (a, b) = channel_pair(env, QpType::Rc)?;
    for i in 0..4 {
        b.post_recv(i, 0, 64)?;
    }
    // A completion that is in the CQ before the request does not report.
    send(&a, 1, SendOp::Send, false)?;
    ok(env, &a.scq, "SEND #1")?;
    std::thread::sleep(QUIET);
    b.rcq.req_notify(false)?;
    no_event(&b, "receive completed before the CQ was armed")?;
    let wc = ok(env, &b.rcq, "receive #1")?;
    check!(wc.wr_id == 0, "receive #1 is wr_id {}", wc.wr_id);
    // Armed for the next completion: both ends report, each on its CQ,
    // and the completion is there to poll once the event is.
    a.scq.req_notify(false)?;
    send(&a, 2, SendOp::Send, false)?;
    event_for(env, &b, &b.rcq, "receive #2")?;
    check!(b.rcq.poll(4).len() == 1, "receive #2 not in the CQ when its event came");
    event_for(env, &a, &a.scq, "SEND #2")?;
    check!(a.scq.poll(4).len() == 1, "SEND #2 not in the CQ when its event came");
    // One event per request: the next completions report nothing.
    send(&a, 3, SendOp::Send, false)?;
    ok(env, &b.rcq, "receive #3")?;
    ok(env, &a.scq, "SEND #3")?;
    no_event(&b, "receive after the one event of its request")?;
    no_event(&a, "SEND after the one event of its request")?;
    // Two requests before a completion still make one event.
    b.rcq.req_notify(false)?;
    b.rcq.req_notify(true)?;
    send(&a, 4, SendOp::Send, false)?;
    event_for(env, &b, &b.rcq, "receive #4 (armed for any, then for solicited)")?;
    ok(env, &b.rcq, "receive #4")?;
    ok(env, &a.scq, "SEND #4")?;
    no_event(&b, "a second event for one completion")?;
    // A CQ armed for solicited completions does not report successful sends.
    a.scq.req_notify(true)?;
    a.post(SendWr::new(5, SendOp::RdmaWrite { remote_addr: b.mr.addr(), rkey: b.mr.rkey() }, vec![a.sge(0, 8)]))?;
    ok(env, &a.scq, "WRITE #5")?;
    no_event(&a, "successful send completion on a CQ armed for solicited ones")
}

fn event_solicited(env: &Env) -> CaseResult {
    let (a, b) = channel_pair(env, QpType::Rc)?;
    for i in 0..3 {
        b.post_recv(i, 0, 64)?;
    }
    b.rcq.req_notify(true)?;
    send(&a, 1, SendOp::Send, false)?;
    ok(env, &b.rcq, "SEND without SE")?;
    no_event(&b, "receive of a SEND without the SE bit")?;
    send(&a, 2, SendOp::Send, true)?;
    event_for(env, &b, &b.rcq, "receive of a SEND with the SE bit")?;
    ok(env, &b.rcq, "SEND with SE")?;
    b.rcq.req_notify(true)?;
    let op = SendOp::RdmaWriteWithImm { remote_addr: b.mr.addr() + 1024, rkey: b.mr.rkey(), imm: 9 };
    send(&a, 3, op, true)?;
    event_for(env, &b, &b.rcq, "WRITE with immediate and SE")?;
    let wc = ok(env, &b.rcq, "WRITE with immediate and SE")?;
    check!(wc.opcode == WcOpcode::RecvRdmaWithImm, "completion opcode {:?}", wc.opcode);
    for _ in 0..3 {
        ok(env, &a.scq, "sender's completions")?;
    }
    // An unsuccessful completion is solicited: a receive flushed by ERR.
    b.post_recv(7, 0, 64)?;
    b.rcq.req_notify(true)?;
    let err = QpAttr { qp_state: QpState::Err, ..QpAttr::default() };
    b.qp.modify(&err, QpAttrMask::STATE, QpPath::default())?;
    event_for(env, &b, &b.rcq, "receive flushed by ERR")?;
    let wc = expect(env, &b.rcq, WcStatus::WrFlushErr, "receive flushed by ERR")?;
    check!(wc.wr_id == 7, "flushed receive is wr_id {}", wc.wr_id);
    Ok(())
}

fn ud_event_solicited(env: &Env) -> CaseResult {
    env.require_clean("a lost datagram would look like a missing event")?;
    let (a, b) = channel_pair(env, QpType::Ud)?;
    let ah = crate::kit::ah_to(env, &a, &b)?;
    for i in 0..2 {
        b.post_recv(i, 0, 256)?;
    }
    b.rcq.req_notify(true)?;
    for (id, se) in [(1, false), (2, true)] {
        let mut w = SendWr::new(id, SendOp::Send, vec![a.sge(0, 32)]);
        w.remote_qpn = b.qp.qp_num();
        w.remote_qkey = env.opts().qkey;
        if se {
            w.flags = w.flags | SendFlags::SOLICITED;
            a.qp.post_send(&[w], Some(&ah))?;
            event_for(env, &b, &b.rcq, "datagram with the SE bit")?;
        } else {
            a.qp.post_send(&[w], Some(&ah))?;
            ok(env, &b.rcq, "datagram without SE")?;
            no_event(&b, "datagram without the SE bit")?;
        }
        ok(env, &a.scq, "UD send")?;
    }
    ok(env, &b.rcq, "datagram with SE")?;
    Ok(())
}

/// Whether `fd` polls readable within `ms` milliseconds.
fn readable(fd: std::os::fd::BorrowedFd<'_>, ms: i64) -> Result<bool, Stop> {
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let t = Timespec { tv_sec: ms / 1000, tv_nsec: (ms % 1000) * 1_000_000 };
    match poll(&mut fds, Some(&t)) {
        Ok(n) => Ok(n > 0 && fds[0].revents().contains(PollFlags::IN)),
        Err(e) => Err(Stop::Fail(format!("poll(2) on the channel fd: {e}"))),
    }
}

fn event_fd(env: &Env) -> CaseResult {
    let (a, b) = channel_pair(env, QpType::Rc)?;
    let fd = channel(&b).fd();
    check!(!readable(fd, 0)?, "a new channel's fd is readable");
    b.post_recv(1, 0, 64)?;
    b.rcq.req_notify(false)?;
    send(&a, 1, SendOp::Send, false)?;
    let ms = env.timeout().as_millis() as i64;
    check!(readable(fd, ms)?, "channel fd not readable within {ms} ms of a completion on its armed CQ");
    let Some(cq) = channel(&b).get_cq_event(Duration::ZERO) else {
        fail!("fd readable, but get_cq_event found no event");
    };
    check!(cq.handle() == b.rcq.handle(), "event for CQ {}", cq.handle());
    cq.ack_events(1)?;
    check!(!readable(fd, 0)?, "channel fd still readable after its one event was taken");
    ok(env, &b.rcq, "receive")?;
    ok(env, &a.scq, "SEND")?;
    Ok(())
}

fn channel_lifecycle(env: &Env) -> CaseResult {
    let ch = env.a.create_comp_channel()?;
    let cq = env.a.create_cq_with_channel(16, &ch)?;
    expect_err(ch.destroy(), EBUSY, "destroying a channel a CQ reports to")?;
    expect_err(env.b.create_cq_with_channel(16, &ch), EINVAL, "a CQ on another context's channel")?;
    expect_err(cq.ack_events(1), EINVAL, "acknowledging an event never handed out")?;
    // Arming a CQ without a channel is accepted, as ibverbs does.
    let plain = env.a.create_cq(16)?;
    plain.req_notify(false)?;
    drop(cq);
    ch.destroy()?;
    Ok(())
}
