//! Shared receive queues (IBTA Vol 1 ch. 10): one pool of receive WQEs
//! feeding several QPs, with the SRQ limit event — armed by setting a limit,
//! fired once when the number of posted WQEs drops below it, then disarmed.

use std::collections::VecDeque;

use verbs_api::RecvWr;

use crate::qp::PostError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecvWqe {
    pub wr_id: u64,
    pub sges: Vec<verbs_api::Sge>,
}

impl RecvWqe {
    pub fn capacity(&self) -> u64 {
        self.sges.iter().map(|s| s.length as u64).sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrqEvent {
    /// `IBV_EVENT_SRQ_LIMIT_REACHED`.
    LimitReached,
}

#[derive(Debug)]
pub struct Srq {
    pub srqn: u32,
    pub pd: u32,
    max_wr: u32,
    max_sge: u32,
    limit: u32,
    queue: VecDeque<RecvWqe>,
    events: VecDeque<SrqEvent>,
}

impl Srq {
    pub fn new(srqn: u32, pd: u32, max_wr: u32, max_sge: u32) -> Self {
        Srq { srqn, pd, max_wr, max_sge, limit: 0, queue: VecDeque::new(), events: VecDeque::new() }
    }

    pub fn post_recv(&mut self, wr: RecvWr) -> Result<(), PostError> {
        if self.queue.len() as u32 >= self.max_wr {
            return Err(PostError::QueueFull);
        }
        if wr.sg_list.len() as u32 > self.max_sge {
            return Err(PostError::TooManySge { given: wr.sg_list.len() as u32, max: self.max_sge });
        }
        self.queue.push_back(RecvWqe { wr_id: wr.wr_id, sges: wr.sg_list });
        Ok(())
    }

    /// Arms the limit event (`ibv_modify_srq` with `IBV_SRQ_LIMIT`); 0 disarms.
    pub fn set_limit(&mut self, limit: u32) -> Result<(), PostError> {
        if limit > self.max_wr {
            return Err(PostError::InvalidArgument("srq_limit larger than max_wr"));
        }
        self.limit = limit;
        Ok(())
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub(crate) fn peek(&self) -> Option<&RecvWqe> {
        self.queue.front()
    }

    pub(crate) fn take(&mut self) -> Option<RecvWqe> {
        let w = self.queue.pop_front()?;
        if self.limit != 0 && (self.queue.len() as u32) < self.limit {
            self.limit = 0;
            self.events.push_back(SrqEvent::LimitReached);
        }
        Some(w)
    }

    pub fn references_lkey(&self, lkey: u32) -> bool {
        self.queue.iter().any(|w| w.sges.iter().any(|s| s.lkey == lkey))
    }

    pub fn poll_event(&mut self) -> Option<SrqEvent> {
        self.events.pop_front()
    }

    /// Drains every WQE (SRQ destruction).
    pub fn drain(&mut self) -> Vec<RecvWqe> {
        self.queue.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_event_fires_once_when_armed() {
        let mut s = Srq::new(1, 1, 8, 1);
        for i in 0..4 {
            s.post_recv(RecvWr { wr_id: i, sg_list: vec![] }).unwrap();
        }
        s.take();
        assert_eq!(s.poll_event(), None, "not armed");
        s.set_limit(2).unwrap();
        s.take();
        assert_eq!(s.poll_event(), None, "2 left, not below 2");
        s.take();
        assert_eq!(s.poll_event(), Some(SrqEvent::LimitReached));
        assert_eq!(s.limit(), 0, "disarmed after firing");
        s.take();
        assert_eq!(s.poll_event(), None);
        assert!(s.set_limit(9).is_err());
    }
}
