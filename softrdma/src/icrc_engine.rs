//! Which CRC engine computes this process's ICRCs
//! (`transport::wire::icrc::Engine`), chosen once when the first device
//! starts: as `SOFTRDMA_ICRC=simd|table` says, else by timing both on a
//! packet-sized buffer, the way Linux picks its RAID-6 and XOR routines at
//! boot. On real CPUs the SIMD folding wins by 10× and is always kept; under
//! QEMU's TCG, where each PCLMULQDQ is a slow helper call, the table is
//! twice as fast (docs/benchmarks-history.md, the TCG work). Both give
//! the same bytes, so the choice is only about speed.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use transport::wire::icrc::{set_engine, Engine};

static CHOSEN: OnceLock<Engine> = OnceLock::new();
/// What the choice measured: the best time of each engine for 32 CRCs of a
/// 1 100-byte buffer (SIMD, table).
static MEASURED: OnceLock<(Duration, Duration)> = OnceLock::new();

/// Chooses the engine (once per process) and returns it.
pub fn choose() -> Engine {
    *CHOSEN.get_or_init(|| {
        let e = match std::env::var("SOFTRDMA_ICRC").ok().as_deref() {
            Some("simd") => Engine::Simd,
            Some("table") => Engine::Table,
            _ => fastest(),
        };
        set_engine(e);
        e
    })
}

/// The engine chosen, if a device has started.
pub fn chosen() -> Option<Engine> {
    CHOSEN.get().copied()
}

/// What the choice measured (SIMD, table; each the best of its trials for
/// 32 CRCs of 1 100 bytes), unless `SOFTRDMA_ICRC` made it.
pub fn measured() -> Option<(Duration, Duration)> {
    MEASURED.get().copied()
}

/// Trials per engine, alternating. Under TCG a trial now and then takes
/// several times its usual time (the guest's other threads, QEMU's own
/// work); with 5 trials each, one process in 15 of a guest comparison kept
/// the SIMD folding at half the table's speed. The best of 15 costs under a
/// millisecond natively and some 50 ms emulated, once per process.
const TRIALS: usize = 15;

/// Pages the packets of the trials lie on, in turn (see `fastest`).
const PAGES: [usize; 4] = [0, 5, 10, 15];

/// Times both on a 1 KiB packet (a few hundred µs natively, a few ms
/// emulated); the table must win clearly to be taken.
///
/// The packet moves between pages from trial to trial. Under TCG every
/// guest load goes through QEMU's software TLB, which is direct-mapped: a
/// data page that shares its slot with a page of the table (16 KiB, four
/// pages) costs a refill on every other load, and the table then runs at a
/// third of its speed — on that page only (stop 14: in 1 process of 40 the
/// one buffer measured was such a page, and the process kept the SIMD
/// folding; three pages in a row were slow in another, the others not). A
/// run touches many pages, so what counts is the engine's speed on pages
/// that do not collide.
fn fastest() -> Engine {
    const LEN: usize = 1100;
    let span = (PAGES[PAGES.len() - 1] + 1) * 4096 + LEN;
    let mem: Vec<u8> = (0..span as u32).map(|i| (i.wrapping_mul(40503) >> 7) as u8).collect();
    let (mut simd, mut table) = (Duration::MAX, Duration::MAX);
    for t in 0..TRIALS {
        let at = PAGES[t % PAGES.len()] * 4096 + 64;
        let buf = &mem[at..at + LEN];
        // black_box on the input too: a pure function of a constant buffer
        // is otherwise computed once and XORed 32 times (the table engine,
        // inlined, once measured 1/32 of its cost and won natively).
        simd = simd.min(time(|| crc32fast::hash(std::hint::black_box(buf))));
        table = table.min(time(|| transport::wire::crc32::update(0, std::hint::black_box(buf))));
    }
    let _ = MEASURED.set((simd, table));
    if table.as_nanos() * 10 < simd.as_nanos() * 8 {
        Engine::Table
    } else {
        Engine::Simd
    }
}

fn time(f: impl Fn() -> u32) -> Duration {
    let t = Instant::now();
    let mut x = 0;
    for _ in 0..32 {
        x ^= std::hint::black_box(f());
    }
    std::hint::black_box(x);
    t.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_native_cpu_keeps_simd_where_it_has_pclmulqdq() {
        // This machine is not emulated: if it has the instruction, the
        // folding must win the measurement by far.
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("pclmulqdq") && std::arch::is_x86_feature_detected!("sse4.1") {
            assert_eq!(fastest(), Engine::Simd);
        }
    }
}
