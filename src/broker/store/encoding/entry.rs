//! Queued copies (a message, and for a session's own copy how it is sent) and retained
//! messages, and the layout of a message and of a PUBLISH they share with session wills.

use std::sync::Arc;

use bytes::BytesMut;
use bytestring::ByteString;

use super::record::{Corrupt, Reader, Writer, FORMAT};
use super::Clock;
use crate::broker::message::Message;
use crate::codec::{self, Decoder};
use crate::packet::{Packet, ProtocolVersion, Publish, QoS};

/// What a session's copy of a message adds to the message itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFields {
    pub qos: QoS,
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
}

/// A queued copy as stored: the message, and for a session's own copy how it is sent.
#[derive(Debug)]
pub struct StoredEntry {
    /// The message's whole weight, kept first so that counting a queue's bytes needs no decoding.
    pub weight: u32,
    pub copy: Option<CopyFields>,
    pub message: Arc<Message>,
}

/// The weight stored at the start of an entry value, without decoding the rest. The checksum
/// is not checked: the weight only keeps a queue's byte count (the store's own bookkeeping,
/// which must also be able to remove a damaged row); nothing read here is delivered.
pub fn entry_weight(value: &[u8]) -> Result<u32, Corrupt> {
    match value.first() {
        Some(&FORMAT) => Reader(&value[1..]).u32(),
        Some(_) => Err(Corrupt("unknown record format")),
        None => Err(Corrupt("empty record")),
    }
}

pub fn encode_entry(message: &Message, copy: Option<&CopyFields>, clock: Clock) -> Vec<u8> {
    let mut w = Writer::new();
    w.u32(u32::try_from(message.weight()).unwrap_or(u32::MAX));
    match copy {
        Some(copy) => {
            w.u8(1);
            write_copy(&mut w, copy);
        }
        None => w.u8(0),
    }
    write_message(&mut w, message, clock);
    w.finish()
}

pub fn decode_entry(value: &[u8], clock: Clock) -> Result<StoredEntry, Corrupt> {
    let mut r = Reader::new(value)?;
    let weight = r.u32()?;
    let copy = if r.bool()? {
        Some(read_copy(&mut r)?)
    } else {
        None
    };
    let message = read_message(&mut r, clock)?;
    Ok(StoredEntry {
        weight,
        copy,
        message,
    })
}

/// A retained message: the message alone.
pub fn encode_retained(message: &Message, clock: Clock) -> Vec<u8> {
    let mut w = Writer::new();
    write_message(&mut w, message, clock);
    w.finish()
}

pub fn decode_retained(value: &[u8], clock: Clock) -> Result<Arc<Message>, Corrupt> {
    let mut r = Reader::new(value)?;
    read_message(&mut r, clock)
}

pub(super) fn write_copy(w: &mut Writer, copy: &CopyFields) {
    w.u8(copy.qos as u8);
    w.u8(u8::from(copy.retain));
    w.u16(u16::try_from(copy.subscription_ids.len()).unwrap_or(u16::MAX));
    for id in copy.subscription_ids.iter().take(usize::from(u16::MAX)) {
        w.u32(*id);
    }
}

pub(super) fn read_copy(r: &mut Reader<'_>) -> Result<CopyFields, Corrupt> {
    let qos = r.qos()?;
    let retain = r.bool()?;
    let count = r.u16()?;
    let subscription_ids = (0..count).map(|_| r.u32()).collect::<Result<_, _>>()?;
    Ok(CopyFields {
        qos,
        retain,
        subscription_ids,
    })
}

fn write_message(w: &mut Writer, message: &Message, clock: Clock) {
    w.u64(message.expires_at.map_or(0, |at| clock.to_unix(at).max(1)));
    w.opt_str(message.publisher_client_id.as_deref());
    let publish = Publish {
        dup: false,
        qos: message.qos,
        retain: message.retain,
        topic: message.topic.clone(),
        packet_id: (message.qos != QoS::AtMostOnce).then_some(1),
        payload: message.payload.clone(),
        properties: message.properties.clone(),
    };
    write_publish(w, &publish);
    // Last, so that records written before it existed still read: they lack it.
    w.u64(clock.to_unix(message.received_at));
}

fn read_message(r: &mut Reader<'_>, clock: Clock) -> Result<Arc<Message>, Corrupt> {
    let expires_at_ms = r.u64()?;
    let publisher_client_id = r.opt_str()?.map(ByteString::from);
    let publish = read_publish(r)?;
    let topic = publish.topic.clone();
    let expires_at = (expires_at_ms != 0).then(|| clock.to_instant(expires_at_ms));
    // When the broker first received it: absent from records of earlier versions.
    let received_at = match r.0.len() {
        0 => clock.instant,
        _ => clock.to_instant(r.u64()?),
    };
    Ok(Message::restored(
        publish,
        topic,
        publisher_client_id,
        expires_at,
        received_at,
    ))
}
pub(super) fn write_publish(w: &mut Writer, publish: &Publish) {
    let mut buf = BytesMut::new();
    // A stored message is one the broker already accepted, so it always encodes; an empty
    // record would be refused on reading rather than misread.
    if codec::encode(
        &Packet::Publish(publish.clone()),
        ProtocolVersion::V5,
        &mut buf,
    )
    .is_err()
    {
        buf.clear();
    }
    w.bytes(&buf);
}

pub(super) fn read_publish(r: &mut Reader<'_>) -> Result<Publish, Corrupt> {
    let raw = r.bytes()?;
    let mut buf = BytesMut::from(raw);
    let mut decoder = Decoder::with_version(ProtocolVersion::V5, u32::MAX);
    match decoder.decode(&mut buf) {
        Ok(Some(Packet::Publish(publish))) if buf.is_empty() => Ok(publish),
        _ => Err(Corrupt("stored PUBLISH does not decode")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::message;
    use super::super::record::{seal, CHECKSUM_LEN};
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn entry_round_trip_keeps_message_copy_and_expiry() {
        let clock = Clock::now();
        let m = message();
        let copy = CopyFields {
            qos: QoS::ExactlyOnce,
            retain: false,
            subscription_ids: vec![4, 9],
        };
        let value = encode_entry(&m, Some(&copy), clock);
        assert_eq!(entry_weight(&value).unwrap() as usize, m.weight());
        let back = decode_entry(&value, clock).unwrap();
        assert_eq!(back.copy, Some(copy));
        assert_eq!(back.message.topic, m.topic);
        assert_eq!(back.message.payload, m.payload);
        assert_eq!(back.message.qos, m.qos);
        assert!(back.message.retain);
        assert_eq!(
            back.message.properties.content_type,
            m.properties.content_type
        );
        assert_eq!(back.message.publisher_client_id, m.publisher_client_id);
        assert_eq!(back.message.weight(), m.weight());
        let left = back.message.remaining_expiry(clock.instant).unwrap();
        assert!(matches!(left, Some(59..=60)), "{left:?}");
    }

    #[test]
    fn expiry_counts_across_downtime() {
        let then = Clock::now();
        let value = encode_retained(&message(), then);
        // Read 50 s later by wall clock, in a process whose monotonic clock starts afresh.
        let later = Clock {
            instant: Instant::now(),
            unix_ms: then.unix_ms + 50_000,
        };
        let back = decode_retained(&value, later).unwrap();
        let left = back.remaining_expiry(later.instant).unwrap();
        assert!(matches!(left, Some(9..=10)), "{left:?}");
        let much_later = Clock {
            instant: Instant::now(),
            unix_ms: then.unix_ms + 61_000,
        };
        let back = decode_retained(&value, much_later).unwrap();
        assert!(back.is_expired(much_later.instant));
    }

    #[test]
    fn the_arrival_time_survives_and_records_without_it_still_read() {
        let clock = Clock::now();
        let value = encode_entry(&message(), None, clock);
        let later = Clock {
            instant: clock.instant + Duration::from_secs(5),
            unix_ms: clock.unix_ms + 5000,
        };
        let read = decode_entry(&value, later).unwrap();
        assert!(read.message.received_at <= clock.instant + Duration::from_millis(1));
        // Written before the arrival time was kept: the last 8 bytes absent.
        let body = &value[..value.len() - CHECKSUM_LEN - 8];
        let older = decode_entry(&seal(body.to_vec()), later).unwrap();
        assert_eq!(older.message.received_at, later.instant);
    }
}
