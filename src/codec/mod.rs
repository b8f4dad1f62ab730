//! The MQTT wire codec: bytes in, [`Packet`]s out, and back. No I/O happens here.
//!
//! The layout mirrors the protocol: one file per packet (`connect.rs`, `publish.rs`, ...), plus
//! the pieces they share (`fixed_header.rs`, `varint.rs`, `string.rs`, `properties.rs`).
//! Decoding splits each whole packet off the read buffer and hands out slices of it, so topics and
//! payloads are never copied. Encoding describes each packet once against a [`sink::Sink`],
//! which either counts or writes, so `encoded_len` cannot drift from `encode`.

mod ack;
mod auth;
mod connack;
mod connect;
mod disconnect;
mod error;
mod fixed_header;
mod properties;
mod publish;
mod sink;
mod string;
mod subscribe;
mod unsubscribe;
mod varint;

pub use error::{DecodeError, EncodeError};

use bytes::{Buf, BytesMut};

use crate::packet::{Packet, ProtocolVersion};
use fixed_header as fh;
use sink::{Counter, Sink};

/// The largest remaining length the fixed header can express (§2.1.4).
pub const MAX_REMAINING_LENGTH: usize = varint::MAX as usize;

/// Reads packets from a connection's read buffer.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Unknown until CONNECT has been read; it then fixes how every later packet is read.
    version: Option<ProtocolVersion>,
    /// Checked against the fixed header before the body is buffered.
    max_packet_size: u32,
}

impl Decoder {
    pub fn new(max_packet_size: u32) -> Decoder {
        Decoder {
            version: None,
            max_packet_size,
        }
    }

    /// A decoder for a connection whose protocol level is already known (client side, tests).
    pub fn with_version(version: ProtocolVersion, max_packet_size: u32) -> Decoder {
        Decoder {
            version: Some(version),
            max_packet_size,
        }
    }

    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    pub fn set_version(&mut self, version: ProtocolVersion) {
        self.version = Some(version);
    }

    pub fn max_packet_size(&self) -> u32 {
        self.max_packet_size
    }

    /// Decodes one packet if the buffer holds a whole one, consuming its bytes; `Ok(None)` asks
    /// for more input. Reading a CONNECT fixes the protocol level of the decoder.
    ///
    /// After an error the buffer is left as it was: the connection is to be closed, not resumed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let Some((header, size)) = self.whole_frame(buf)? else {
            return Ok(None);
        };
        let mut body = buf.split_to(size).freeze();
        body.advance(header.header_len);
        let v5 = self.version.is_some_and(ProtocolVersion::is_v5);
        let packet = match header.packet_type {
            fh::CONNECT => {
                let connect = connect::decode(body)?;
                // A second CONNECT does not change how this connection is read: the broker
                // refuses it as a protocol error.
                self.version.get_or_insert(connect.protocol);
                Packet::Connect(Box::new(connect))
            }
            fh::CONNACK => Packet::ConnAck(connack::decode(body, v5)?),
            fh::PUBLISH => Packet::Publish(publish::decode(body, header.flags, v5)?),
            fh::PUBACK => Packet::PubAck(ack::decode(body, v5)?),
            fh::PUBREC => Packet::PubRec(ack::decode(body, v5)?),
            fh::PUBREL => Packet::PubRel(ack::decode(body, v5)?),
            fh::PUBCOMP => Packet::PubComp(ack::decode(body, v5)?),
            fh::SUBSCRIBE => Packet::Subscribe(subscribe::decode(body, v5)?),
            fh::SUBACK => Packet::SubAck(subscribe::decode_suback(body, v5)?),
            fh::UNSUBSCRIBE => Packet::Unsubscribe(unsubscribe::decode(body, v5)?),
            fh::UNSUBACK => Packet::UnsubAck(unsubscribe::decode_unsuback(body, v5)?),
            fh::PINGREQ | fh::PINGRESP if !body.is_empty() => {
                return Err(DecodeError::Malformed("PINGREQ/PINGRESP with a body"));
            }
            fh::PINGREQ => Packet::PingReq,
            fh::PINGRESP => Packet::PingResp,
            fh::DISCONNECT => Packet::Disconnect(disconnect::decode(body, v5)?),
            // check_first_byte refused AUTH outside v5 and type 0.
            _ => Packet::Auth(auth::decode(body)?),
        };
        Ok(Some(packet))
    }
}

/// Bytes a PUBLISH's properties take on the wire (v5), length prefix excluded: the part of a
/// message that whole-message accounting adds to its topic and payload.
pub fn publish_properties_len(properties: &crate::packet::PublishProperties) -> usize {
    use properties::Props;
    let mut counter = Counter::default();
    properties.emit(&mut counter);
    counter.len
}

impl Decoder {
    /// The size of the packet at the start of `buf` if all of it is there, checking its fixed
    /// header as `decode` does; `Ok(None)` asks for more input. Consumes nothing.
    pub fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        Ok(self.whole_frame(buf)?.map(|(_, size)| size))
    }

    fn whole_frame(&self, buf: &[u8]) -> Result<Option<(fh::FixedHeader, usize)>, DecodeError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        fh::check_first_byte(first, self.version.map(ProtocolVersion::is_v5))?;
        let Some(header) = fh::parse(buf)? else {
            return Ok(None);
        };
        let size = header.header_len + header.remaining_len;
        if size as u64 > u64::from(self.max_packet_size) {
            return Err(DecodeError::PacketTooLarge {
                size: size as u64,
                max: self.max_packet_size,
            });
        }
        // No reserve() here: the claimed length is only a claim until the bytes arrive.
        if buf.len() < size {
            return Ok(None);
        }
        Ok(Some((header, size)))
    }
}

fn first_byte(packet: &Packet) -> u8 {
    let packet_type = match packet {
        Packet::Publish(p) => return publish::first_byte(p),
        Packet::PubRel(_) => return (fh::PUBREL << 4) | 0b0010,
        Packet::Subscribe(_) => return (fh::SUBSCRIBE << 4) | 0b0010,
        Packet::Unsubscribe(_) => return (fh::UNSUBSCRIBE << 4) | 0b0010,
        Packet::Connect(_) => fh::CONNECT,
        Packet::ConnAck(_) => fh::CONNACK,
        Packet::PubAck(_) => fh::PUBACK,
        Packet::PubRec(_) => fh::PUBREC,
        Packet::PubComp(_) => fh::PUBCOMP,
        Packet::SubAck(_) => fh::SUBACK,
        Packet::UnsubAck(_) => fh::UNSUBACK,
        Packet::PingReq => fh::PINGREQ,
        Packet::PingResp => fh::PINGRESP,
        Packet::Disconnect(_) => fh::DISCONNECT,
        Packet::Auth(_) => fh::AUTH,
    };
    packet_type << 4
}

/// Everything after the fixed header.
#[inline]
fn emit_body<S: Sink>(packet: &Packet, version: ProtocolVersion, s: &mut S) {
    let v5 = version.is_v5();
    match packet {
        Packet::Connect(c) => connect::emit(c, s),
        Packet::ConnAck(c) => connack::emit(c, v5, s),
        Packet::Publish(p) => publish::emit(p, v5, s),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            ack::emit(a, v5, s)
        }
        Packet::Subscribe(p) => subscribe::emit(p, v5, s),
        Packet::SubAck(p) => subscribe::emit_suback(p, v5, s),
        Packet::Unsubscribe(p) => unsubscribe::emit(p, v5, s),
        Packet::UnsubAck(p) => unsubscribe::emit_unsuback(p, v5, s),
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => disconnect::emit(d, v5, s),
        Packet::Auth(_) if !v5 => s.fail(EncodeError::Invalid("AUTH does not exist before MQTT 5")),
        Packet::Auth(a) => auth::emit(a, s),
    }
}

/// Validates the packet and returns its remaining length.
fn remaining_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, EncodeError> {
    let mut c = Counter::default();
    emit_body(packet, version, &mut c);
    let len = c.finish()?;
    if len > MAX_REMAINING_LENGTH {
        return Err(EncodeError::TooLarge(1 + 4 + len));
    }
    Ok(len)
}

/// Appends `packet`'s wire form for `version` to `buf`. A CONNECT is written in the protocol it
/// names. On error nothing is written.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let len = remaining_len(packet, version)?;
    buf.reserve(1 + varint::len(len) + len);
    buf.u8(first_byte(packet));
    buf.varint(len);
    emit_body(packet, version, buf);
    Ok(())
}

/// The number of bytes `encode` would write, fixed header included.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, EncodeError> {
    let len = remaining_len(packet, version)?;
    Ok(1 + varint::len(len) + len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Auth, Disconnect, Publish, QoS, ReasonCode};
    use bytes::Bytes;

    #[test]
    fn publish_round_trip_and_version_fixing() {
        let mut d = Decoder::new(1024);
        let mut buf = BytesMut::from(&b"\x10\x0d\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x00"[..]);
        assert!(matches!(
            d.decode(&mut buf).unwrap(),
            Some(Packet::Connect(_))
        ));
        assert_eq!(d.version(), Some(ProtocolVersion::V5));
        let p = Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: "a/b".into(),
            packet_id: Some(3),
            payload: Bytes::from_static(b"hello"),
            ..Publish::default()
        });
        encode(&p, ProtocolVersion::V5, &mut buf).unwrap();
        assert_eq!(buf.len(), encoded_len(&p, ProtocolVersion::V5).unwrap());
        assert_eq!(d.decode(&mut buf).unwrap(), Some(p));
        assert!(buf.is_empty());
    }

    #[test]
    fn too_large_from_header_alone() {
        let mut d = Decoder::with_version(ProtocolVersion::V5, 100);
        let mut buf = BytesMut::from(&b"\x30\xff\x7f"[..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(DecodeError::PacketTooLarge {
                size: 16_386,
                max: 100
            })
        );
    }

    #[test]
    fn partial_input_asks_for_more() {
        let mut d = Decoder::with_version(ProtocolVersion::V5, 100);
        let mut buf = BytesMut::from(&b"\x30\x05\x00\x01"[..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert_eq!(buf.len(), 4);
    }

    #[test]
    fn disconnect_and_auth_short_forms() {
        let mut out = BytesMut::new();
        encode(
            &Packet::Disconnect(Disconnect::default()),
            ProtocolVersion::V5,
            &mut out,
        )
        .unwrap();
        encode(
            &Packet::Auth(Auth::default()),
            ProtocolVersion::V5,
            &mut out,
        )
        .unwrap();
        let d = Disconnect {
            reason_code: ReasonCode::SESSION_TAKEN_OVER,
            ..Default::default()
        };
        encode(&Packet::Disconnect(d), ProtocolVersion::V5, &mut out).unwrap();
        assert_eq!(&out[..], b"\xe0\x00\xf0\x00\xe0\x01\x8e");
    }

    #[test]
    fn auth_is_not_encodable_in_v3() {
        let mut out = BytesMut::new();
        assert!(encode(
            &Packet::Auth(Auth::default()),
            ProtocolVersion::V3_1_1,
            &mut out
        )
        .is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn oversized_string_is_an_error() {
        let p = Packet::Publish(Publish {
            topic: "x".repeat(70_000).into(),
            ..Publish::default()
        });
        assert_eq!(
            encoded_len(&p, ProtocolVersion::V3_1_1),
            Err(EncodeError::FieldTooLong("topic name"))
        );
    }
}
