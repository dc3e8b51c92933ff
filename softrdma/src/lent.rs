//! Payloads lent from a region: on the in-memory fabric an RC request's
//! payload stays in the sender's MR until its frame is delivered, and the
//! receiving thread copies it into the frame there, as a NIC's DMA reads a
//! payload at transmit time (`transport::mem::Memory::read_lent`).
//!
//! Why: copied at send time, a payload is written into a frame buffer whose
//! lines the receiving CPU read last, and read back by that CPU: each line
//! crosses between the CPUs twice. The MR a sender keeps sending from is
//! read by both CPUs and written by neither, so its lines stay in both
//! caches (docs/benchmarks-history.md, "What stop 26 changed").

use std::ops::Range;
use std::sync::Arc;

use crate::mr::Region;

/// Payloads shorter than this are copied at send time: their lines are
/// few, and a lent one costs a region reference and a lock on each side.
pub const LEND_FROM: usize = 1024;

/// Whether lending pays on this machine: only with more than one CPU.
/// What it saves is lines crossing between the sender's CPU and the
/// receiver's; on one CPU there are none, and its references and locks
/// are all cost. (The guest of `rxe_compare.sh`, one emulated CPU, ran
/// 5–7 % slower with every payload lent: docs/benchmarks-history.md, stop 26.)
pub fn worth_it() -> bool {
    crate::busy_poll::multi_cpu()
}

/// `len` bytes at `off` in `region`, to be copied to `at` in a frame.
#[derive(Debug)]
pub struct Lent {
    pub(crate) region: Arc<Region>,
    pub(crate) off: usize,
    pub(crate) len: usize,
    /// Where they go: an address while the transport emits the frame,
    /// an offset into the frame once the device has placed it (`placed`).
    pub(crate) at: usize,
}

impl Lent {
    /// The same payload with `at` made an offset into `frame`, the buffer
    /// the transport emitted it into; `None` if `at` does not point into it.
    pub(crate) fn placed(self, frame: &[u8]) -> Option<Lent> {
        let at = self.at.checked_sub(frame.as_ptr() as usize)?;
        (at.checked_add(self.len)? <= frame.len()).then_some(Lent { at, ..self })
    }

    fn range(&self, frame_len: usize) -> Option<Range<usize>> {
        let end = self.at.checked_add(self.len)?;
        (end <= frame_len).then_some(self.at..end)
    }

    /// Copies the payload from `data`, its region's bytes, into `frame`.
    fn copy_into(&self, data: &[u8], frame: &mut [u8]) {
        if let (Some(src), Some(r)) = (data.get(self.off..self.off.saturating_add(self.len)), self.range(frame.len())) {
            frame[r].copy_from_slice(src);
        }
    }
}

/// Copies each placed payload `(i, lent)` into `frames[i]`. A payload that
/// no longer fits its frame (a truncated frame) is left out: the frame then
/// fails its ICRC check and is counted as a drop there.
pub(crate) fn fill(jobs: &mut Vec<(usize, Lent)>, frames: &mut [Vec<u8>], spent: &mut Vec<Arc<Region>>) {
    in_runs(jobs, spent, |jobs, j, data| {
        let (i, l) = &jobs[j];
        if let Some(frame) = frames.get_mut(*i) {
            l.copy_into(data, frame);
        }
    });
}

/// `fill` for the receiving end, which also checks each frame's ICRC as
/// it copies the payload in, in one pass (`transport::wire::frame::fill_checked`):
/// returns the frames whose ICRC held, bit `i` for `frames[i]`, so that
/// their receiver need not compute it again. A frame with more than one
/// payload lent (several gather entries) is only copied, and checked by
/// its receiver: its ICRC holds only once every part is in.
pub(crate) fn fill_checked(jobs: &mut Vec<(usize, Lent)>, frames: &mut [Vec<u8>], spent: &mut Vec<Arc<Region>>) -> u64 {
    let mut checked = 0u64;
    in_runs(jobs, spent, |jobs, j, data| {
        let (i, l) = &jobs[j];
        let alone = |k: Option<&(usize, Lent)>| k.is_none_or(|(o, _)| o != i);
        let Some(frame) = frames.get_mut(*i) else { return };
        let src = data.get(l.off..l.off.saturating_add(l.len));
        let verdict = match src {
            Some(src) if *i < 64 && alone(jobs.get(j + 1)) && alone(j.checked_sub(1).and_then(|p| jobs.get(p))) => {
                transport::wire::frame::fill_checked(frame, l.at, src).ok()
            }
            _ => None,
        };
        match verdict {
            Some(true) => checked |= 1 << i,
            // Copied, and its ICRC fails: its receiver counts the drop.
            Some(false) => {}
            None => l.copy_into(data, frame),
        }
    });
    checked
}

/// Calls `each(jobs, j, region's bytes)` for every job, taking a region's
/// read lock once per run of payloads from it (per payload, the lock's
/// line would cross between the CPUs each time); then moves the regions
/// to `spent`, let go of once it holds `RELEASE_AT`.
fn in_runs(
    jobs: &mut Vec<(usize, Lent)>,
    spent: &mut Vec<Arc<Region>>,
    mut each: impl FnMut(&[(usize, Lent)], usize, &[u8]),
) {
    let mut s = 0;
    while s < jobs.len() {
        let region = &jobs[s].1.region;
        let e = s + jobs[s..].iter().take_while(|(_, l)| Arc::ptr_eq(&l.region, region)).count();
        if let Ok(data) = region.data.read() {
            for j in s..e {
                each(jobs, j, &data);
            }
        }
        s = e;
    }
    spent.extend(jobs.drain(..).map(|(_, l)| l.region));
    if spent.len() >= RELEASE_AT {
        spent.clear();
    }
}

/// Regions a receiver holds before letting go of them together: the
/// count in each region's `Arc` is a line its sender writes per frame.
const RELEASE_AT: usize = 64;

/// `fill` for one frame (the paths that fill as a frame leaves: a
/// capture, a frame to this device, a link that takes no lent payloads).
pub(crate) fn fill_one(lent: &mut Vec<Lent>, frame: &mut [u8]) {
    for l in lent.drain(..) {
        let Some(l) = l.placed(frame) else { continue };
        let Ok(data) = l.region.data.read() else { continue };
        l.copy_into(&data, frame);
    }
}
