//! Codec errors, each mapped to the MQTT 5 reason code the broker answers with.

use crate::packet::ReasonCode;

/// Why a byte string is not an acceptable packet. The variant, not the message, decides the
/// reason code: the message only helps whoever reads the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The first packet of a connection was not CONNECT: the spec says close without CONNACK.
    #[error("first packet was not CONNECT")]
    NotConnect,
    #[error("packet of {size} bytes exceeds the maximum packet size {max}")]
    PacketTooLarge { size: u64, max: u32 },
    /// The bytes do not follow the packet grammar (spec: "Malformed Packet").
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The grammar holds but a rule of the protocol is broken (spec: "Protocol Error").
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// Unknown protocol name or level in CONNECT: CONNACK 0x84 (v5) or return code 1 (3.1.1).
    #[error("unsupported protocol: {0}")]
    UnsupportedProtocol(&'static str),
    /// A PUBLISH or Will topic the spec forbids (wildcards, empty in 3.1.1).
    #[error("invalid topic name: {0}")]
    TopicNameInvalid(&'static str),
    /// A Topic Alias of 0 (spec §3.3.2.3.4).
    #[error("invalid topic alias: {0}")]
    TopicAliasInvalid(&'static str),
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
            DecodeError::TopicNameInvalid(_) => ReasonCode::TOPIC_NAME_INVALID,
            DecodeError::TopicAliasInvalid(_) => ReasonCode::TOPIC_ALIAS_INVALID,
        }
    }
}

/// Why a packet cannot be written. Returned instead of panicking or writing a frame the peer
/// would reject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("packet too large to encode: {0} bytes")]
    TooLarge(usize),
    #[error("field too long: {0}")]
    FieldTooLong(&'static str),
    #[error("invalid packet: {0}")]
    Invalid(&'static str),
}
