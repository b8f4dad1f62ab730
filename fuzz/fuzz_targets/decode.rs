//! Arbitrary bytes into every kind of decoder: nothing may panic, and whatever decodes must
//! re-encode to something that decodes to the same packet.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sharq::codec::{encode, encoded_len, Decoder};
use sharq::packet::{Packet, ProtocolVersion};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let max = if selector & 0x80 != 0 { 64 } else { 1 << 20 };
    let mut decoder = match selector & 0x03 {
        0 => Decoder::new(max),
        1 => Decoder::with_version(ProtocolVersion::V3_1, max),
        2 => Decoder::with_version(ProtocolVersion::V3_1_1, max),
        _ => Decoder::with_version(ProtocolVersion::V5, max),
    };
    let mut buf = BytesMut::from(input);
    while let Ok(Some(packet)) = decoder.decode(&mut buf) {
        let version = decoder.version().unwrap_or(ProtocolVersion::V5);
        let mut out = BytesMut::new();
        if encode(&packet, version, &mut out).is_ok() {
            assert_eq!(Ok(out.len()), encoded_len(&packet, version));
            let mut again = match &packet {
                Packet::Connect(_) => Decoder::new(u32::MAX),
                _ => Decoder::with_version(version, u32::MAX),
            };
            let decoded = again.decode(&mut out).expect("re-encoded packet decodes");
            assert_eq!(decoded.as_ref(), Some(&packet));
        }
    }
});
