//! The MQTT wire codec: bytes in, [`Packet`]s out, and back. No I/O happens here.
//!
//! STUB: the codec helper replaces this file's bodies; the signatures are the contract the
//! broker codes against.

mod error;

pub use error::{DecodeError, EncodeError};

use bytes::BytesMut;

use crate::packet::{Packet, ProtocolVersion};

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
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let _ = buf;
        unimplemented!("codec stub")
    }
}

/// Appends `packet`'s wire form for `version` to `buf`.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let _ = (packet, version, buf);
    unimplemented!("codec stub")
}

/// The number of bytes `encode` would write, fixed header included.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, EncodeError> {
    let _ = (packet, version);
    unimplemented!("codec stub")
}
