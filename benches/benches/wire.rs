//! Wire micro-benchmarks: frame parse/verify and emit, the ICRC alone, PSN
//! arithmetic, and renumbering a held ACK's IPv4 identification. Payload sizes 64, 256, 1024 and 4096 bytes (RC WRITE MIDDLE
//! over IPv4, as a 4 KiB write_bw at MTU 4096 sends them).
//!
//! `cargo bench -p benches --bench wire`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use transport::psn::Psn;
use transport::sim::path_between;
use transport::wire::{icrc, AethRepr, BthRepr, ExtHeaders, Frame, FrameRepr, IbRepr, Opcode, RethRepr, Syndrome};

const SIZES: [usize; 4] = [64, 256, 1024, 4096];

fn repr(payload: usize, first: bool) -> FrameRepr {
    let mut ext = ExtHeaders::default();
    let op = if first {
        ext.reth = Some(RethRepr { va: 0x1000_0000, rkey: 0x1234, dma_len: 65536 });
        Opcode::RcWriteFirst
    } else {
        Opcode::RcWriteMiddle
    };
    let ib = IbRepr { bth: BthRepr::new(op, 0xffff, 0x12, 0x1000), ext, payload_len: payload };
    path_between(0, 0x11, 0x12, false).frame_repr(ib, 1)
}

fn frame(payload: usize) -> Vec<u8> {
    let r = repr(payload, false);
    let data: Vec<u8> = (0..payload).map(|i| i as u8).collect();
    let mut buf = vec![0u8; r.buffer_len()];
    r.emit(&data, &mut buf).expect("emit");
    buf
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_parse");
    for n in SIZES {
        let f = frame(n);
        g.throughput(Throughput::Bytes(f.len() as u64));
        g.bench_function(format!("verify/{n}"), |b| b.iter(|| Frame::verify(black_box(&f)).is_ok()));
        g.bench_function(format!("parse/{n}"), |b| {
            b.iter(|| Frame::parse(black_box(&f)).map(|f| f.repr.ib.payload_len))
        });
    }
    g.finish();
}

fn emit(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_emit");
    for n in SIZES {
        let r = repr(n, true);
        let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
        let mut buf = vec![0u8; r.buffer_len()];
        g.throughput(Throughput::Bytes(buf.len() as u64));
        g.bench_function(format!("emit/{n}"), |b| b.iter(|| black_box(&r).emit(black_box(&data), &mut buf).is_ok()));
        g.bench_function(format!("frame_repr+emit/{n}"), |b| {
            let path = path_between(0, 0x11, 0x12, false);
            let ib = r.ib;
            b.iter(|| {
                let fr = path.frame_repr(black_box(ib), 7);
                fr.emit(&data, &mut buf).is_ok()
            })
        });
    }
    g.finish();
}

fn icrc_only(c: &mut Criterion) {
    let mut g = c.benchmark_group("icrc");
    for n in SIZES {
        let f = frame(n);
        let (l3, rest) = f[14..].split_at(20);
        let (udp, ib) = rest.split_at(8);
        let ib = &ib[..ib.len() - 4];
        g.throughput(Throughput::Bytes((l3.len() + udp.len() + ib.len()) as u64));
        g.bench_function(format!("compute/{n}"), |b| {
            b.iter(|| icrc::compute(black_box(l3), Some(black_box(udp)), black_box(ib)))
        });
        // The software engine over the same bytes (what an emulated CPU
        // gets, see softrdma::icrc_engine), and its table alone.
        g.bench_function(format!("crc32_soft/{n}"), |b| b.iter(|| transport::wire::crc32::update(0, black_box(ib))));
        g.bench_function(format!("crc32_table/{n}"), |b| b.iter(|| transport::wire::crc32::by_table(0, black_box(ib))));
    }
    g.finish();
}

/// A lent payload's way into its frame at the receiver: copied and then
/// hashed (until stop 27), against hashed as it is copied
/// (`icrc::Running::update_copy`). Both hot in cache here; the fabric's
/// source lines come from the other CPU (docs/benchmarks.md, "Where the cycles go").
fn icrc_copy(c: &mut Criterion) {
    let mut g = c.benchmark_group("icrc_copy");
    for n in [1024usize, 4096] {
        let src: Vec<u8> = (0..n).map(|i| (i * 31) as u8).collect();
        let mut dst = vec![0u8; n];
        g.throughput(Throughput::Bytes(n as u64));
        g.bench_function(format!("copy_then_hash/{n}"), |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&src));
                let mut h = crc32fast::Hasher::new();
                h.update(&dst);
                h.finalize()
            })
        });
        g.bench_function(format!("hash_while_copying/{n}"), |b| {
            b.iter(|| transport::wire::icrc_copy::copy_and_hash(0, black_box(&src), &mut dst))
        });
    }
    g.finish();
}

fn psn(c: &mut Criterion) {
    let mut g = c.benchmark_group("psn");
    let ps: Vec<Psn> = (0..1024u32).map(|i| Psn::new(i.wrapping_mul(2_654_435_761))).collect();
    g.throughput(Throughput::Elements(ps.len() as u64));
    g.bench_function("distance x1024", |b| {
        b.iter(|| ps.windows(2).map(|w| black_box(w[1]).distance(w[0]) as i64).sum::<i64>())
    });
    g.bench_function("add+forward_from x1024", |b| {
        b.iter(|| ps.iter().map(|p| black_box(*p).add(7).forward_from(*p) as u64).sum::<u64>())
    });
    g.bench_function("cmp_wrapping sort 1024", |b| {
        b.iter_batched(|| ps.clone(), |mut v| v.sort_by(|a, b| a.cmp_wrapping(*b)), BatchSize::SmallInput)
    });
    g.finish();
}

/// What a held ACK costs to join its answer's run over IPv4
/// (`frame::set_ipv4_ident`: parse, ICRC check, re-emit with a new ICRC).
fn ack_ident(c: &mut Criterion) {
    let aeth = AethRepr { syndrome: Syndrome::Ack { credits: 31 }, msn: 1 };
    let ext = ExtHeaders { aeth: Some(aeth), ..Default::default() };
    let ib = IbRepr { bth: BthRepr::new(Opcode::RcAcknowledge, 0xffff, 0x12, 0x1000), ext, payload_len: 0 };
    let r = path_between(0, 0x11, 0x12, false).frame_repr(ib, 1);
    let mut buf = vec![0u8; r.buffer_len()];
    r.emit(&[], &mut buf).expect("emit");
    let mut ident = 0u16;
    c.bench_function("ack/set_ipv4_ident", |b| {
        b.iter(|| {
            ident = ident.wrapping_add(1);
            transport::wire::frame::set_ipv4_ident(black_box(&mut buf), ident).is_ok()
        })
    });
}

criterion_group!(benches, parse, emit, icrc_only, icrc_copy, psn, ack_ident);
criterion_main!(benches);
