//! Per-QP and per-endpoint counters, named after rxe's hw counters
//! (`rdma statistic show` on an rxe device) where one exists.

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub sent_pkts: u64,
    pub rcvd_pkts: u64,
    pub sent_bytes: u64,
    pub rcvd_bytes: u64,
    /// Requests the responder had already executed (re-ACKed or replayed).
    pub duplicate_request: u64,
    /// Requests ahead of the expected PSN (a NAK-sequence error was due).
    pub out_of_seq_request: u64,
    /// RNR NAKs this QP received as a requester.
    pub rcvd_rnr_err: u64,
    /// RNR NAKs this QP sent as a responder.
    pub send_rnr_err: u64,
    /// NAK-sequence errors received.
    pub rcvd_seq_err: u64,
    /// Retransmission rounds started (timeout, sequence NAK, implied NAK).
    pub completer_retry_err: u64,
    /// Local ACK timeouts that fired.
    pub local_ack_timeout_err: u64,
    pub retry_exceeded_err: u64,
    pub retry_rnr_exceeded_err: u64,
    /// Packets sent again by go-back-N.
    pub retransmitted_pkts: u64,
    /// NAKs sent by the responder, by code.
    pub nak_invalid_request_sent: u64,
    pub nak_remote_access_sent: u64,
    pub nak_remote_op_sent: u64,
    /// Remote-access violations seen by the responder (bad R_Key, PD, rights, bounds, alignment).
    pub remote_access_violations: u64,
    /// Packets dropped because no receive WQE was posted (UD/UC) .
    pub rcv_no_wqe_drops: u64,
    /// UC packets dropped while waiting for the next FIRST/ONLY after a gap.
    pub uc_gap_drops: u64,
    /// Responses the completer could not use (stale, unexpected, out of order).
    pub ignored_responses: u64,
    pub rdma_sends: u64,
    pub rdma_recvs: u64,
    /// ACKs sent as built ahead while the device was idle (`Qp::prepare`).
    pub acks_built_ahead: u64,
    /// Requests sent with headers built ahead (`Qp::prepare`).
    pub requests_built_ahead: u64,
}

impl Counters {
    /// Adds every field of `other` into `self`.
    pub fn accumulate(&mut self, o: &Counters) {
        macro_rules! add {
            ($($f:ident),*) => { $( self.$f += o.$f; )* };
        }
        add!(
            sent_pkts,
            rcvd_pkts,
            sent_bytes,
            rcvd_bytes,
            duplicate_request,
            out_of_seq_request,
            rcvd_rnr_err,
            send_rnr_err,
            rcvd_seq_err,
            completer_retry_err,
            local_ack_timeout_err,
            retry_exceeded_err,
            retry_rnr_exceeded_err,
            retransmitted_pkts,
            nak_invalid_request_sent,
            nak_remote_access_sent,
            nak_remote_op_sent,
            remote_access_violations,
            rcv_no_wqe_drops,
            uc_gap_drops,
            ignored_responses,
            rdma_sends,
            rdma_recvs,
            acks_built_ahead,
            requests_built_ahead
        );
    }
}
