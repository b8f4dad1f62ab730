//! Why a connection ends, and the reason code it ends with.

use crate::codec::{DecodeError, EncodeError};
use crate::packet::ReasonCode;

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A rule with a reason code of its own (0x93 Receive Maximum exceeded, 0x94 Topic Alias
    /// invalid, 0x90 Topic Name invalid, ...).
    #[error("{message} (reason {code})")]
    Refused {
        code: ReasonCode,
        message: &'static str,
    },
    #[error("encoding failed: {0}")]
    Encode(#[from] EncodeError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl ConnectionError {
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            ConnectionError::Decode(e) => e.reason_code(),
            ConnectionError::Protocol(_) => ReasonCode::PROTOCOL_ERROR,
            ConnectionError::Refused { code, .. } => *code,
            ConnectionError::Encode(_) => ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
            ConnectionError::Io(_) => ReasonCode::UNSPECIFIED_ERROR,
        }
    }
}
