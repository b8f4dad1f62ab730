//! Fixed-size integers, UTF-8 strings and binary data inside a packet body (spec §1.5). Every
//! read is bounds-checked: running out of bytes means the packet lied about its length.

use bytes::{Buf, Bytes};
use bytestring::ByteString;

use super::DecodeError;

pub(crate) fn read_u8(r: &mut Bytes) -> Result<u8, DecodeError> {
    if r.is_empty() {
        return Err(DecodeError::Malformed("truncated byte"));
    }
    Ok(r.get_u8())
}

pub(crate) fn read_u16(r: &mut Bytes) -> Result<u16, DecodeError> {
    if r.len() < 2 {
        return Err(DecodeError::Malformed("truncated two byte integer"));
    }
    Ok(r.get_u16())
}

pub(crate) fn read_u32(r: &mut Bytes) -> Result<u32, DecodeError> {
    if r.len() < 4 {
        return Err(DecodeError::Malformed("truncated four byte integer"));
    }
    Ok(r.get_u32())
}

/// A packet identifier where the spec requires one: 0 is reserved (§2.2.1).
pub(crate) fn read_packet_id(r: &mut Bytes) -> Result<u16, DecodeError> {
    match read_u16(r)? {
        0 => Err(DecodeError::Protocol("packet identifier 0")),
        id => Ok(id),
    }
}

/// Binary Data (§1.5.6): a slice of the frame, never a copy.
pub(crate) fn read_binary(r: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = usize::from(read_u16(r)?);
    if r.len() < len {
        return Err(DecodeError::Malformed("truncated string or binary data"));
    }
    Ok(r.split_to(len))
}

/// UTF-8 Encoded String (§1.5.4). U+0000 is forbidden and is the only character whose encoding
/// holds a zero byte; surrogates are already rejected by Rust's UTF-8 validation.
pub(crate) fn read_string(r: &mut Bytes) -> Result<ByteString, DecodeError> {
    let raw = read_binary(r)?;
    if raw.contains(&0) {
        return Err(DecodeError::Malformed("U+0000 in UTF-8 string"));
    }
    ByteString::try_from(raw).map_err(|_| DecodeError::Malformed("invalid UTF-8 string"))
}

/// A Topic Name (PUBLISH, Will): a UTF-8 string without wildcards (§4.7.1). Emptiness is left to
/// the caller because MQTT 5 allows it next to a Topic Alias.
pub(crate) fn read_topic_name(r: &mut Bytes) -> Result<ByteString, DecodeError> {
    let raw = read_binary(r)?;
    // A branch-free pass the compiler vectorises; the slow search only runs on bad input.
    let suspicious = raw
        .iter()
        .fold(false, |acc, &b| acc | (b == 0) | (b == b'+') | (b == b'#'));
    if suspicious {
        if raw.contains(&0) {
            return Err(DecodeError::Malformed("U+0000 in UTF-8 string"));
        }
        return Err(DecodeError::TopicNameInvalid("wildcard in topic name"));
    }
    ByteString::try_from(raw).map_err(|_| DecodeError::Malformed("invalid UTF-8 string"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_is_a_slice_of_the_frame() {
        let frame = Bytes::from_static(b"\x00\x03abcrest");
        let mut r = frame.clone();
        let s = read_string(&mut r).unwrap();
        assert_eq!(&*s, "abc");
        assert_eq!(&r[..], b"rest");
        assert_eq!(s.as_bytes().as_ptr(), frame[2..].as_ptr());
    }

    #[test]
    fn rejects_bad_strings() {
        let mut r = Bytes::from_static(b"\x00\x02a\x00");
        assert_eq!(
            read_string(&mut r),
            Err(DecodeError::Malformed("U+0000 in UTF-8 string"))
        );
        let mut r = Bytes::from_static(b"\x00\x02\xc3\x28");
        assert!(matches!(
            read_string(&mut r),
            Err(DecodeError::Malformed(_))
        ));
        let mut r = Bytes::from_static(b"\x00\x05abc");
        assert!(matches!(
            read_string(&mut r),
            Err(DecodeError::Malformed(_))
        ));
        // CESU-style encoded surrogate U+D800.
        let mut r = Bytes::from_static(b"\x00\x03\xed\xa0\x80");
        assert!(matches!(
            read_string(&mut r),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn topic_name_rejects_wildcards() {
        let mut r = Bytes::from_static(b"\x00\x03a/+");
        assert!(matches!(
            read_topic_name(&mut r),
            Err(DecodeError::TopicNameInvalid(_))
        ));
        let mut r = Bytes::from_static(b"\x00\x01#");
        assert!(matches!(
            read_topic_name(&mut r),
            Err(DecodeError::TopicNameInvalid(_))
        ));
    }

    #[test]
    fn packet_id_zero_is_protocol_error() {
        let mut r = Bytes::from_static(b"\x00\x00");
        assert!(matches!(
            read_packet_id(&mut r),
            Err(DecodeError::Protocol(_))
        ));
    }
}
