//! The frame of every stored value: a format byte first, its CRC32C last, and the checked
//! [`Writer`] and [`Reader`] of the fields between.

use crate::packet::QoS;

/// First byte of every stored value: the layout version of this file.
pub const FORMAT: u8 = 2;
/// The first byte of values written before records carried a checksum (store format 1): the
/// same layout without the CRC32C suffix. Never read as such; [`upgrade_v1`] rewrites them.
pub const FORMAT_V1: u8 = 1;
/// Length of the CRC32C suffix.
pub(super) const CHECKSUM_LEN: usize = 4;

#[derive(Debug, thiserror::Error)]
#[error("corrupt record: {0}")]
pub struct Corrupt(pub &'static str);

/// `body` (starting with its format byte) with its CRC32C appended: a value as stored.
pub(super) fn seal(mut body: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&body);
    body.extend_from_slice(&crc.to_be_bytes());
    body
}

/// A value of store format 1 rewritten in this format (the layout is the same; the format byte
/// changes and the checksum is added). `None` for a value that is not a format-1 record: it is
/// left as it is, and refused when read.
pub fn upgrade_v1(value: &[u8]) -> Option<Vec<u8>> {
    match value.split_first() {
        Some((&FORMAT_V1, rest)) => {
            let mut body = Vec::with_capacity(value.len() + CHECKSUM_LEN);
            body.push(FORMAT);
            body.extend_from_slice(rest);
            Some(seal(body))
        }
        _ => None,
    }
}

pub(super) struct Writer(Vec<u8>);

impl Writer {
    pub(super) fn new() -> Writer {
        Writer(vec![FORMAT])
    }
    /// The value as stored, checksum appended.
    pub(super) fn finish(self) -> Vec<u8> {
        seal(self.0)
    }
    pub(super) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(super) fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(super) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(super) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(super) fn bytes(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(v);
    }
    pub(super) fn opt_str(&mut self, v: Option<&str>) {
        match v {
            Some(s) => self.bytes(s.as_bytes()),
            None => self.u32(u32::MAX),
        }
    }
}

pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    /// The fields of a stored value, once its format byte and its checksum are checked.
    pub(super) fn new(value: &'a [u8]) -> Result<Reader<'a>, Corrupt> {
        match value.first() {
            Some(&FORMAT) => {}
            Some(_) => return Err(Corrupt("unknown record format")),
            None => return Err(Corrupt("empty record")),
        }
        let Some(split) = value.len().checked_sub(CHECKSUM_LEN).filter(|&n| n >= 1) else {
            return Err(Corrupt("record cut short"));
        };
        let (body, stored) = value.split_at(split);
        let stored = u32::from_be_bytes([stored[0], stored[1], stored[2], stored[3]]);
        if crc32c::crc32c(body) != stored {
            return Err(Corrupt("checksum mismatch: the record was damaged on disk"));
        }
        Ok(Reader(&body[1..]))
    }
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], Corrupt> {
        if self.0.len() < n {
            return Err(Corrupt("record cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub(super) fn u8(&mut self) -> Result<u8, Corrupt> {
        Ok(self.take(1)?[0])
    }
    pub(super) fn u16(&mut self) -> Result<u16, Corrupt> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub(super) fn u32(&mut self) -> Result<u32, Corrupt> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(super) fn u64(&mut self) -> Result<u64, Corrupt> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }
    pub(super) fn bytes(&mut self) -> Result<&'a [u8], Corrupt> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    pub(super) fn opt_str(&mut self) -> Result<Option<String>, Corrupt> {
        let len = self.u32()?;
        if len == u32::MAX {
            return Ok(None);
        }
        let raw = self.take(len as usize)?;
        String::from_utf8(raw.to_vec())
            .map(Some)
            .map_err(|_| Corrupt("string is not UTF-8"))
    }
    pub(super) fn str(&mut self) -> Result<String, Corrupt> {
        self.opt_str()?.ok_or(Corrupt("missing string"))
    }
    pub(super) fn bool(&mut self) -> Result<bool, Corrupt> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Corrupt("bad flag")),
        }
    }
    pub(super) fn qos(&mut self) -> Result<QoS, Corrupt> {
        QoS::from_u8(self.u8()?).ok_or(Corrupt("bad QoS"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::message;
    use super::*;
    use crate::broker::owner::Owner;
    use crate::broker::store::encoding::{
        decode_entry, decode_session, encode_entry, encode_session, Clock, StoredSession,
    };
    use bytestring::ByteString;

    #[test]
    fn foreign_and_cut_records_are_refused() {
        let value = encode_entry(&message(), None, Clock::now());
        assert!(decode_entry(&value[..value.len() - 3], Clock::now()).is_err());
        let mut foreign = value.clone();
        foreign[0] = 99;
        assert!(decode_entry(&foreign, Clock::now()).is_err());
        assert!(decode_session(&[]).is_err());
    }

    /// A record as store format 1 wrote it: no checksum, format byte 1.
    fn as_v1(value: &[u8]) -> Vec<u8> {
        let mut old = value[..value.len() - CHECKSUM_LEN].to_vec();
        old[0] = FORMAT_V1;
        old
    }

    #[test]
    fn one_flipped_bit_anywhere_is_refused_never_misread() {
        let clock = Clock::now();
        let value = encode_entry(&message(), None, clock);
        for at in 0..value.len() {
            let mut damaged = value.clone();
            damaged[at] ^= 0x10;
            assert!(decode_entry(&damaged, clock).is_err(), "byte {at}");
        }
        let session = encode_session(&StoredSession {
            expiry_interval: 1,
            disconnected_at_ms: None,
            subscriptions: Vec::new(),
            will: None,
            owner: Owner::User(ByteString::from("alice")),
        });
        let mut damaged = session.clone();
        damaged[2] ^= 1;
        assert!(decode_session(&damaged).is_err());
    }

    #[test]
    fn a_format_1_record_is_refused_as_it_is_and_reads_once_upgraded() {
        let clock = Clock::now();
        let value = encode_entry(&message(), None, clock);
        let old = as_v1(&value);
        assert!(decode_entry(&old, clock).is_err());
        assert_eq!(upgrade_v1(&old).unwrap(), value);
        assert!(upgrade_v1(&value).is_none(), "already this format");
        assert!(upgrade_v1(&[]).is_none());
    }
}
