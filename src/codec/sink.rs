//! One description of each packet's wire form serves two sinks: a counter and the output buffer.
//! Writing the layout once is what keeps `encoded_len` equal to what `encode` writes.
//!
//! Validation (string lengths, field consistency) is reported to the counter, which always runs
//! first, so the writing pass never meets an error and never needs to return one.

use bytes::{BufMut, BytesMut};

use super::{varint, EncodeError};

pub(crate) trait Sink {
    fn u8(&mut self, v: u8);
    fn u16(&mut self, v: u16);
    fn u32(&mut self, v: u32);
    /// A Variable Byte Integer; values above `varint::MAX` are reported by the counter.
    fn varint(&mut self, v: usize);
    /// Raw bytes with no length prefix (payloads).
    fn raw(&mut self, b: &[u8]);
    /// Records why the packet cannot be encoded; only the counter keeps it.
    fn fail(&mut self, e: EncodeError);

    /// A length-prefixed string or binary field (§1.5.4, §1.5.6).
    fn string(&mut self, b: &[u8], what: &'static str) {
        if b.len() > usize::from(u16::MAX) {
            self.fail(EncodeError::FieldTooLong(what));
        }
        self.u16(b.len() as u16);
        self.raw(b);
    }
}

/// Counts bytes and remembers the first validation failure.
#[derive(Default)]
pub(crate) struct Counter {
    pub(crate) len: usize,
    pub(crate) error: Option<EncodeError>,
}

impl Counter {
    pub(crate) fn finish(self) -> Result<usize, EncodeError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.len),
        }
    }
}

impl Sink for Counter {
    #[inline]
    fn u8(&mut self, _: u8) {
        self.len += 1;
    }
    #[inline]
    fn u16(&mut self, _: u16) {
        self.len += 2;
    }
    #[inline]
    fn u32(&mut self, _: u32) {
        self.len += 4;
    }
    #[inline]
    fn varint(&mut self, v: usize) {
        if v > varint::MAX as usize {
            self.fail(EncodeError::TooLarge(v));
        }
        self.len += varint::len(v);
    }
    #[inline]
    fn raw(&mut self, b: &[u8]) {
        self.len += b.len();
    }
    fn fail(&mut self, e: EncodeError) {
        self.error.get_or_insert(e);
    }
}

impl Sink for BytesMut {
    #[inline]
    fn u8(&mut self, v: u8) {
        self.put_u8(v);
    }
    #[inline]
    fn u16(&mut self, v: u16) {
        self.put_u16(v);
    }
    #[inline]
    fn u32(&mut self, v: u32) {
        self.put_u32(v);
    }
    #[inline]
    fn varint(&mut self, v: usize) {
        let mut out = [0u8; 4];
        let n = varint::encode(v.min(varint::MAX as usize) as u32, &mut out);
        self.put_slice(&out[..n]);
    }
    #[inline]
    fn raw(&mut self, b: &[u8]) {
        self.put_slice(b);
    }
    fn fail(&mut self, _: EncodeError) {}
}
