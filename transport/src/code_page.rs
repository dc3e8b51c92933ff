//! One 4 KiB-aligned code section for the ICRC's inner loops.
//!
//! Under QEMU's TCG (the kernel-rxe guest of docs/benchmarks.md) a jump to
//! another guest page cannot be chained from one translated block to the
//! next: every such jump goes through a hash lookup. Wherever the linker
//! happened to put it, the table CRC's 64-byte loop straddled a page
//! boundary, which cost two lookups per 64 bytes (about 70 per frame) and
//! 10 % of `write_bw` in the guest. Functions marked with
//! `#[cfg_attr(all(target_os = "linux", target_arch = "x86_64"),
//! link_section = ".text.hot.softrdma")]` share this section, and the
//! section starts on a page boundary, so as long as they add up to less than
//! 4 KiB none of their loops crosses a page. Since stop 34 they are three
//! (the sparse and the table CRC and `icrc::start`, 3.9 KiB in all), and
//! `.ci/run` fails the build when the release binary has them on more than
//! one page. On real CPUs placement is irrelevant and nothing changes.
//!
//! `link_section` and `global_asm!` count as `unsafe_code` (a section name
//! could put code where the loader runs it); these only name an ordinary
//! text section, which is why the crate denies rather than forbids unsafe
//! code and allows it here and at the marked functions alone.

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[allow(unsafe_code)]
mod align {
    core::arch::global_asm!(".pushsection .text.hot.softrdma,\"ax\",@progbits", ".p2align 12", ".popsection");
}
