//! Fuzzes the RoCE frame parser with a round-trip oracle.
//!
//! For any input: `classify` and `Frame::parse`/`Frame::verify` must not panic.
//! When `Frame::parse` accepts the input, `classify` must agree that it is RoCE,
//! and re-emitting the parsed repr with the parsed payload must give a frame
//! that verifies (emit computes the ICRC) and parses back to the same repr and
//! payload; emitting that repr again must give the very same bytes; and when
//! the input's ICRC was correct, the re-emitted frame's ICRC is the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use transport::wire::{classify, Frame, FrameKind, NetRepr};

fuzz_target!(|data: &[u8]| {
    let kind = classify(data);
    let _ = Frame::verify(data);
    let Ok(frame) = Frame::parse(data) else {
        return;
    };
    let expected_kind = match frame.repr.net {
        NetRepr::V1 { .. } => FrameKind::RoceV1,
        NetRepr::V4 { .. } | NetRepr::V6 { .. } => FrameKind::RoceV2,
    };
    assert_eq!(kind, expected_kind, "classify disagrees with parse");

    let payload = frame.payload();
    assert_eq!(payload.len(), frame.repr.ib.payload_len);
    let mut out = vec![0u8; frame.repr.buffer_len()];
    let n = frame
        .repr
        .emit(payload, &mut out)
        .expect("a parsed repr re-emits");
    assert_eq!(n, out.len());

    let again = Frame::verify(&out).expect("a re-emitted frame verifies");
    assert_eq!(
        again.repr, frame.repr,
        "re-emitted frame parses differently"
    );
    assert_eq!(again.payload(), payload, "re-emitted payload differs");

    // Emission is deterministic and writes every byte.
    let mut out2 = vec![0xa5u8; out.len()];
    again.repr.emit(again.payload(), &mut out2).unwrap();
    assert_eq!(out2, out, "second emission differs");

    // The ICRC covers every byte the repr keeps except the pad bytes (emitted
    // as zeros) and the IPv4 reserved flag (emitted clear): when the input's
    // ICRC was right and those are zero too, the emitted ICRC must be the same.
    let l3 = frame.repr.eth.header_len();
    let evil_bit = matches!(frame.repr.net, NetRepr::V4 { .. }) && data[l3 + 6] & 0x80 != 0;
    if frame.icrc_ok() && !evil_bit && frame.packet.pad_bytes().iter().all(|&b| b == 0) {
        assert_eq!(
            again.packet.icrc(),
            frame.packet.icrc(),
            "ICRC changed on re-emission"
        );
    }
});
