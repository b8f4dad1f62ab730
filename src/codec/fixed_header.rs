//! The fixed header (spec §2.1): packet type, flags and remaining length.

use super::{varint, DecodeError};

pub(crate) const CONNECT: u8 = 1;
pub(crate) const CONNACK: u8 = 2;
pub(crate) const PUBLISH: u8 = 3;
pub(crate) const PUBACK: u8 = 4;
pub(crate) const PUBREC: u8 = 5;
pub(crate) const PUBREL: u8 = 6;
pub(crate) const PUBCOMP: u8 = 7;
pub(crate) const SUBSCRIBE: u8 = 8;
pub(crate) const SUBACK: u8 = 9;
pub(crate) const UNSUBSCRIBE: u8 = 10;
pub(crate) const UNSUBACK: u8 = 11;
pub(crate) const PINGREQ: u8 = 12;
pub(crate) const PINGRESP: u8 = 13;
pub(crate) const DISCONNECT: u8 = 14;
pub(crate) const AUTH: u8 = 15;

/// A fixed header whose remaining length has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FixedHeader {
    pub(crate) packet_type: u8,
    pub(crate) flags: u8,
    /// Type byte plus the remaining-length bytes.
    pub(crate) header_len: usize,
    pub(crate) remaining_len: usize,
}

/// Checks the first byte alone, so garbage is refused before anything else is buffered.
/// `v5` is `None` before CONNECT.
pub(crate) fn check_first_byte(byte: u8, v5: Option<bool>) -> Result<(), DecodeError> {
    let packet_type = byte >> 4;
    let flags = byte & 0x0f;
    match packet_type {
        0 => return Err(DecodeError::Malformed("reserved packet type 0")),
        // AUTH is reserved in 3.1.1 (§2.2.1 of that spec).
        AUTH if v5 == Some(false) => return Err(DecodeError::Malformed("reserved packet type 15")),
        _ => {}
    }
    if v5.is_none() && packet_type != CONNECT {
        return Err(DecodeError::NotConnect);
    }
    let expected = match packet_type {
        // DUP/QoS/RETAIN, checked by the PUBLISH reader.
        PUBLISH => return Ok(()),
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => 0b0010,
        _ => 0,
    };
    if flags != expected {
        return Err(DecodeError::Malformed("reserved fixed header flags"));
    }
    Ok(())
}

/// Reads the fixed header at the start of `buf`; `Ok(None)` asks for more bytes.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
    let Some((&first, rest)) = buf.split_first() else {
        return Ok(None);
    };
    Ok(varint::peek(rest)?.map(|(len, n)| FixedHeader {
        packet_type: first >> 4,
        flags: first & 0x0f,
        header_len: 1 + n,
        remaining_len: len as usize,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connect_before_version() {
        assert_eq!(check_first_byte(0x10, None), Ok(()));
        assert_eq!(check_first_byte(0x30, None), Err(DecodeError::NotConnect));
        assert!(matches!(
            check_first_byte(0x00, None),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn reserved_flags() {
        assert_eq!(check_first_byte(0x62, Some(true)), Ok(()));
        assert!(check_first_byte(0x60, Some(true)).is_err());
        assert!(check_first_byte(0x80, Some(true)).is_err());
        assert!(check_first_byte(0xa3, Some(true)).is_err());
        assert!(check_first_byte(0x41, Some(true)).is_err());
        assert!(check_first_byte(0xe1, Some(true)).is_err());
        assert_eq!(check_first_byte(0x3f, Some(true)), Ok(()));
    }

    #[test]
    fn auth_only_in_v5() {
        assert_eq!(check_first_byte(0xf0, Some(true)), Ok(()));
        assert!(matches!(
            check_first_byte(0xf0, Some(false)),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn header_parse() {
        assert_eq!(parse(&[0x30]).unwrap(), None);
        assert_eq!(
            parse(&[0x30, 0x80, 0x01]).unwrap(),
            Some(FixedHeader {
                packet_type: 3,
                flags: 0,
                header_len: 3,
                remaining_len: 128
            })
        );
    }
}
