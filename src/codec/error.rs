//! Codec errors, each mapped to the MQTT 5 reason code the broker answers with.

use crate::packet::ReasonCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The first packet of a connection was not CONNECT: the spec says close without CONNACK.
    #[error("first packet was not CONNECT")]
    NotConnect,
    #[error("packet of {size} bytes exceeds the maximum packet size {max}")]
    PacketTooLarge { size: u64, max: u32 },
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("unsupported protocol: {0}")]
    UnsupportedProtocol(&'static str),
}

impl DecodeError {
    /// The reason code a v5 DISCONNECT (or CONNACK) reports for this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::NotConnect => ReasonCode::PROTOCOL_ERROR,
            DecodeError::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            DecodeError::Malformed(_) => ReasonCode::MALFORMED_PACKET,
            DecodeError::Protocol(_) => ReasonCode::PROTOCOL_ERROR,
            DecodeError::UnsupportedProtocol(_) => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("packet too large to encode: {0} bytes")]
    TooLarge(usize),
    #[error("field too long: {0}")]
    FieldTooLong(&'static str),
    #[error("invalid packet: {0}")]
    Invalid(&'static str),
}
