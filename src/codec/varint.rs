//! Variable Byte Integer (spec §1.5.5): remaining length, property length, Subscription
//! Identifier.

use bytes::{Buf, Bytes};

use super::DecodeError;

/// The largest value four bytes can carry.
pub(crate) const MAX: u32 = 268_435_455;

/// Reads a varint from the start of `buf` without consuming it. `Ok(None)` means more bytes are
/// needed; the result is the value and the number of bytes it took.
pub(crate) fn peek(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (i, &byte) in buf.iter().enumerate().take(4) {
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            // A non-minimal encoding (a trailing 0x00 group) is forbidden by §1.5.5; accepting it
            // would let two different byte strings mean the same packet.
            if i > 0 && byte == 0 {
                return Err(DecodeError::Malformed("non-minimal variable byte integer"));
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        return Err(DecodeError::Malformed(
            "variable byte integer longer than 4 bytes",
        ));
    }
    Ok(None)
}

/// Reads and consumes a varint inside a packet body, where running out of bytes is malformed.
pub(crate) fn read(r: &mut Bytes) -> Result<u32, DecodeError> {
    match peek(r)? {
        Some((value, n)) => {
            r.advance(n);
            Ok(value)
        }
        None => Err(DecodeError::Malformed("truncated variable byte integer")),
    }
}

/// How many bytes `value` takes on the wire.
pub(crate) fn len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes `value` into `out` and returns the bytes used; the caller has checked `value <= MAX`.
pub(crate) fn encode(mut value: u32, out: &mut [u8; 4]) -> usize {
    let mut i = 0;
    loop {
        let mut byte = (value & 0x7f) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        out[i] = byte;
        i += 1;
        if value == 0 || i == 4 {
            return i;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_round_trip() {
        for v in [0u32, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, MAX] {
            let mut out = [0u8; 4];
            let n = encode(v, &mut out);
            assert_eq!(n, len(v as usize));
            assert_eq!(peek(&out[..n]).unwrap(), Some((v, n)));
        }
    }

    #[test]
    fn incomplete_asks_for_more() {
        assert_eq!(peek(&[]).unwrap(), None);
        assert_eq!(peek(&[0x80]).unwrap(), None);
        assert_eq!(peek(&[0xff, 0xff, 0xff]).unwrap(), None);
    }

    #[test]
    fn five_bytes_is_malformed() {
        assert!(matches!(
            peek(&[0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            peek(&[0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn non_minimal_is_malformed() {
        assert!(matches!(
            peek(&[0x80, 0x00]),
            Err(DecodeError::Malformed(_))
        ));
    }
}
