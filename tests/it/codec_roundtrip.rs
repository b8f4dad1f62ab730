//! encode -> decode returns the same packet, and `encoded_len` is exactly what `encode` wrote.

use crate::codec_strategies as strat;
use bytes::BytesMut;
use proptest::prelude::*;
use sharq::codec::{encode, encoded_len, Decoder};
use sharq::packet::{Packet, ProtocolVersion};

fn round_trip(packet: &Packet, version: ProtocolVersion) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::new();
    encode(packet, version, &mut buf).map_err(|e| TestCaseError::fail(format!("encode: {e}")))?;
    prop_assert_eq!(buf.len(), encoded_len(packet, version).unwrap());
    let total = buf.len();
    let mut decoder = match packet {
        Packet::Connect(_) => Decoder::new(total as u32),
        _ => Decoder::with_version(version, total as u32),
    };
    let decoded = decoder
        .decode(&mut buf)
        .map_err(|e| TestCaseError::fail(format!("decode: {e}")))?;
    prop_assert!(buf.is_empty(), "decoder left {} bytes", buf.len());
    prop_assert_eq!(decoded.as_ref(), Some(packet));
    Ok(())
}

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn v3_packets_round_trip(p in strat::packet(ProtocolVersion::V3_1_1)) {
        round_trip(&p, ProtocolVersion::V3_1_1)?;
        // A 3.1 connection uses the 3.1.1 rules after CONNECT.
        round_trip(&p, ProtocolVersion::V3_1)?;
    }

    #[test]
    fn v5_packets_round_trip(p in strat::packet(ProtocolVersion::V5)) {
        round_trip(&p, ProtocolVersion::V5)?;
    }

    #[test]
    fn connect_round_trips_and_fixes_version(
        (version, p) in (0usize..3).prop_flat_map(|i| (Just(VERSIONS[i]), strat::connect(VERSIONS[i])))
    ) {
        round_trip(&p, version)?;
        let mut buf = BytesMut::new();
        encode(&p, version, &mut buf).unwrap();
        let mut d = Decoder::new(u32::MAX);
        d.decode(&mut buf).unwrap();
        prop_assert_eq!(d.version(), Some(version));
    }

    #[test]
    fn streams_decode_in_order(ps in proptest::collection::vec(strat::packet(ProtocolVersion::V5), 1..8)) {
        let mut buf = BytesMut::new();
        for p in &ps {
            encode(p, ProtocolVersion::V5, &mut buf).unwrap();
        }
        let mut d = Decoder::with_version(ProtocolVersion::V5, u32::MAX);
        for p in &ps {
            let got = d.decode(&mut buf).unwrap();
            prop_assert_eq!(got.as_ref(), Some(p));
        }
        prop_assert!(buf.is_empty());
    }
}
