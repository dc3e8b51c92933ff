//! The two requester timers of IBTA Vol 1 §9.7.6.
//!
//! - Local ACK timeout (§9.7.6.1.3): 4.096 µs × 2^timeout; 0 means "infinite".
//! - RNR NAK timer (§9.7.5.2.8, Table 45): a 5-bit code in the RNR NAK's
//!   syndrome selects how long the requester waits before retrying.

use core::time::Duration;

pub fn local_ack_timeout(timeout: u8) -> Option<Duration> {
    if timeout == 0 {
        None
    } else {
        Some(Duration::from_nanos(4096u64 << timeout.min(31)))
    }
}

/// Table 45, in microseconds, indexed by the RNR timer code.
const RNR_TIMER_US: [u32; 32] = [
    655_360, 10, 20, 30, 40, 60, 80, 120, 160, 240, 320, 480, 640, 960, 1_280, 1_920, 2_560, 3_840, 5_120, 7_680,
    10_240, 15_360, 20_480, 30_720, 40_960, 61_440, 81_920, 122_880, 163_840, 245_760, 327_680, 491_520,
];

pub fn rnr_timer(code: u8) -> Duration {
    Duration::from_micros(RNR_TIMER_US[(code & 0x1f) as usize] as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_45_and_ack_timeout() {
        assert_eq!(rnr_timer(0), Duration::from_micros(655_360));
        assert_eq!(rnr_timer(1), Duration::from_micros(10));
        assert_eq!(rnr_timer(12), Duration::from_micros(640));
        assert_eq!(rnr_timer(31), Duration::from_micros(491_520));
        assert_eq!(local_ack_timeout(0), None);
        assert_eq!(local_ack_timeout(14), Some(Duration::from_nanos(4096 * 16384)));
    }
}
