//! Where an outbound QoS 1/2 exchange stood, kept so it resumes after a restart.

use super::entry::{read_copy, write_copy, CopyFields};
use super::record::{Corrupt, Reader, Writer};

/// Where an outbound QoS 1/2 exchange stood: which client holds it, under which packet id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInflight {
    pub client_id: String,
    pub packet_id: u16,
    /// PUBREC received and PUBREL sent (QoS 2 second half).
    pub released: bool,
    pub copy: CopyFields,
}

pub fn encode_inflight(inflight: &StoredInflight) -> Vec<u8> {
    let mut w = Writer::new();
    w.bytes(inflight.client_id.as_bytes());
    w.u16(inflight.packet_id);
    w.u8(u8::from(inflight.released));
    write_copy(&mut w, &inflight.copy);
    w.finish()
}

pub fn decode_inflight(value: &[u8]) -> Result<StoredInflight, Corrupt> {
    let mut r = Reader::new(value)?;
    Ok(StoredInflight {
        client_id: r.str()?,
        packet_id: r.u16()?,
        released: r.bool()?,
        copy: read_copy(&mut r)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::QoS;

    #[test]
    fn inflight_round_trip() {
        let inflight = StoredInflight {
            client_id: "c".to_owned(),
            packet_id: 65535,
            released: true,
            copy: CopyFields {
                qos: QoS::ExactlyOnce,
                retain: true,
                subscription_ids: vec![],
            },
        };
        assert_eq!(
            decode_inflight(&encode_inflight(&inflight)).unwrap(),
            inflight
        );
    }
}
