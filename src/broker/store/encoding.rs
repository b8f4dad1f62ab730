//! The byte layout of every record the store keeps. A message is kept as the MQTT 5 PUBLISH
//! that carries it (our own codec writes and reads it, properties and all), framed by the few
//! facts a PUBLISH cannot hold: when it expires in wall-clock time and who published it.
//!
//! Every value starts with [`FORMAT`] and ends with the CRC32C of everything before it (four
//! bytes, big-endian). [`Reader::new`], which every decode goes through, checks both: a value
//! with another first byte, or whose checksum does not match (a bit flipped on disk, a torn
//! write redb did not catch), is refused as corrupt, never guessed at. Times are Unix
//! milliseconds, so expiry keeps counting while the broker is down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use bytestring::ByteString;

use crate::codec::{self, Decoder};
use crate::packet::{
    LastWill, Packet, ProtocolVersion, Publish, PublishProperties, QoS, RetainHandling,
    SubscriptionOptions, WillProperties,
};

use crate::broker::message::Message;
use crate::broker::owner::Owner;

/// First byte of every stored value: the layout version of this file.
pub const FORMAT: u8 = 2;
/// The first byte of values written before records carried a checksum (store format 1): the
/// same layout without the CRC32C suffix. Never read as such; [`upgrade_v1`] rewrites them.
pub const FORMAT_V1: u8 = 1;
/// Length of the CRC32C suffix.
const CHECKSUM_LEN: usize = 4;

/// A session record's owner tag.
const OWNER_ANONYMOUS: u8 = 0;
const OWNER_USER: u8 = 1;
const OWNER_UNRECORDED: u8 = 2;

#[derive(Debug, thiserror::Error)]
#[error("corrupt record: {0}")]
pub struct Corrupt(pub &'static str);

/// `body` (starting with its format byte) with its CRC32C appended: a value as stored.
fn seal(mut body: Vec<u8>) -> Vec<u8> {
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

pub use crate::clock::unix_now_ms;

/// Converts between the process's monotonic clock and wall-clock milliseconds, at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub instant: Instant,
    pub unix_ms: u64,
}

impl Clock {
    pub fn now() -> Clock {
        Clock {
            instant: Instant::now(),
            unix_ms: unix_now_ms(),
        }
    }

    fn to_unix(self, at: Instant) -> u64 {
        match at.checked_duration_since(self.instant) {
            Some(ahead) => self.unix_ms.saturating_add(millis(ahead)),
            None => self
                .unix_ms
                .saturating_sub(millis(self.instant.duration_since(at))),
        }
    }

    fn to_instant(self, unix_ms: u64) -> Instant {
        if unix_ms >= self.unix_ms {
            self.instant + Duration::from_millis(unix_ms - self.unix_ms)
        } else {
            let behind = Duration::from_millis(self.unix_ms - unix_ms);
            self.instant.checked_sub(behind).unwrap_or(self.instant)
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

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

/// Where an outbound QoS 1/2 exchange stood: which client holds it, under which packet id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInflight {
    pub client_id: String,
    pub packet_id: u16,
    /// PUBREC received and PUBREL sent (QoS 2 second half).
    pub released: bool,
    pub copy: CopyFields,
}

/// A session as stored: enough to rebuild it offline with its subscriptions and will.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSession {
    pub expiry_interval: u32,
    /// When its last connection left; `None` while one was attached (the store's last commit
    /// time then stands in for the moment the broker went away).
    pub disconnected_at_ms: Option<u64>,
    pub subscriptions: Vec<(String, SubscriptionOptions, Option<u32>)>,
    pub will: Option<LastWill>,
    /// Who may resume it; [`Owner::Unrecorded`] in records written before owners were kept.
    pub owner: Owner,
}

struct Writer(Vec<u8>);

impl Writer {
    fn new() -> Writer {
        Writer(vec![FORMAT])
    }
    /// The value as stored, checksum appended.
    fn finish(self) -> Vec<u8> {
        seal(self.0)
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(v);
    }
    fn opt_str(&mut self, v: Option<&str>) {
        match v {
            Some(s) => self.bytes(s.as_bytes()),
            None => self.u32(u32::MAX),
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// The fields of a stored value, once its format byte and its checksum are checked.
    fn new(value: &'a [u8]) -> Result<Reader<'a>, Corrupt> {
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
    fn take(&mut self, n: usize) -> Result<&'a [u8], Corrupt> {
        if self.0.len() < n {
            return Err(Corrupt("record cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn u8(&mut self) -> Result<u8, Corrupt> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Corrupt> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, Corrupt> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, Corrupt> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }
    fn bytes(&mut self) -> Result<&'a [u8], Corrupt> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    fn opt_str(&mut self) -> Result<Option<String>, Corrupt> {
        let len = self.u32()?;
        if len == u32::MAX {
            return Ok(None);
        }
        let raw = self.take(len as usize)?;
        String::from_utf8(raw.to_vec())
            .map(Some)
            .map_err(|_| Corrupt("string is not UTF-8"))
    }
    fn str(&mut self) -> Result<String, Corrupt> {
        self.opt_str()?.ok_or(Corrupt("missing string"))
    }
    fn bool(&mut self) -> Result<bool, Corrupt> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Corrupt("bad flag")),
        }
    }
    fn qos(&mut self) -> Result<QoS, Corrupt> {
        QoS::from_u8(self.u8()?).ok_or(Corrupt("bad QoS"))
    }
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

pub fn encode_inflight(inflight: &StoredInflight) -> Vec<u8> {
    let mut w = Writer::new();
    w.bytes(inflight.client_id.as_bytes());
    w.u16(inflight.packet_id);
    w.u8(u8::from(inflight.released));
    write_copy(&mut w, &inflight.copy);
    w.finish()
}

pub fn decode_inflight(value: &[u8]) -> Result<StoredInflight, Corrupt> {
    let mut r = Reader::new(value)?;
    Ok(StoredInflight {
        client_id: r.str()?,
        packet_id: r.u16()?,
        released: r.bool()?,
        copy: read_copy(&mut r)?,
    })
}

pub fn encode_session(session: &StoredSession) -> Vec<u8> {
    let mut w = Writer::new();
    w.u32(session.expiry_interval);
    w.u64(session.disconnected_at_ms.unwrap_or(0));
    w.u32(u32::try_from(session.subscriptions.len()).unwrap_or(u32::MAX));
    for (filter, options, identifier) in &session.subscriptions {
        w.bytes(filter.as_bytes());
        w.u8(options.qos as u8);
        w.u8(u8::from(options.no_local));
        w.u8(u8::from(options.retain_as_published));
        w.u8(options.retain_handling as u8);
        match identifier {
            Some(id) => {
                w.u8(1);
                w.u32(*id);
            }
            None => w.u8(0),
        }
    }
    match &session.will {
        Some(will) => {
            w.u8(1);
            w.u32(will.properties.will_delay_interval.unwrap_or(0));
            let publish = Publish {
                dup: false,
                qos: will.qos,
                retain: will.retain,
                topic: will.topic.clone(),
                packet_id: (will.qos != QoS::AtMostOnce).then_some(1),
                payload: will.payload.clone(),
                properties: PublishProperties {
                    payload_format_indicator: will.properties.payload_format_indicator,
                    message_expiry_interval: will.properties.message_expiry_interval,
                    topic_alias: None,
                    response_topic: will.properties.response_topic.clone(),
                    correlation_data: will.properties.correlation_data.clone(),
                    user_properties: will.properties.user_properties.clone(),
                    subscription_identifiers: Vec::new(),
                    content_type: will.properties.content_type.clone(),
                },
            };
            write_publish(&mut w, &publish);
        }
        None => w.u8(0),
    }
    // Last, so that records written before it still read (as `Owner::Unrecorded`).
    match &session.owner {
        Owner::Anonymous => w.u8(OWNER_ANONYMOUS),
        Owner::User(name) => {
            w.u8(OWNER_USER);
            w.bytes(name.as_bytes());
        }
        Owner::Unrecorded => w.u8(OWNER_UNRECORDED),
    }
    w.finish()
}

pub fn decode_session(value: &[u8]) -> Result<StoredSession, Corrupt> {
    let mut r = Reader::new(value)?;
    let expiry_interval = r.u32()?;
    let disconnected_at_ms = Some(r.u64()?).filter(|&ms| ms != 0);
    let count = r.u32()? as usize;
    let mut subscriptions = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let filter =
            String::from_utf8(r.bytes()?.to_vec()).map_err(|_| Corrupt("filter is not UTF-8"))?;
        let options = SubscriptionOptions {
            qos: r.qos()?,
            no_local: r.bool()?,
            retain_as_published: r.bool()?,
            retain_handling: match r.u8()? {
                0 => RetainHandling::SendAtSubscribe,
                1 => RetainHandling::SendIfNew,
                2 => RetainHandling::DoNotSend,
                _ => return Err(Corrupt("bad retain handling")),
            },
        };
        let identifier = if r.bool()? { Some(r.u32()?) } else { None };
        subscriptions.push((filter, options, identifier));
    }
    let will = if r.bool()? {
        let delay = r.u32()?;
        let publish = read_publish(&mut r)?;
        let p = publish.properties;
        Some(LastWill {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties: WillProperties {
                will_delay_interval: (delay > 0).then_some(delay),
                payload_format_indicator: p.payload_format_indicator,
                message_expiry_interval: p.message_expiry_interval,
                content_type: p.content_type,
                response_topic: p.response_topic,
                correlation_data: p.correlation_data,
                user_properties: p.user_properties,
            },
        })
    } else {
        None
    };
    let owner = if r.is_empty() {
        Owner::Unrecorded
    } else {
        match r.u8()? {
            OWNER_ANONYMOUS => Owner::Anonymous,
            OWNER_USER => Owner::User(ByteString::from(
                String::from_utf8(r.bytes()?.to_vec())
                    .map_err(|_| Corrupt("owner is not UTF-8"))?,
            )),
            OWNER_UNRECORDED => Owner::Unrecorded,
            _ => return Err(Corrupt("bad session owner")),
        }
    };
    Ok(StoredSession {
        expiry_interval,
        disconnected_at_ms,
        subscriptions,
        will,
        owner,
    })
}

fn write_copy(w: &mut Writer, copy: &CopyFields) {
    w.u8(copy.qos as u8);
    w.u8(u8::from(copy.retain));
    w.u16(u16::try_from(copy.subscription_ids.len()).unwrap_or(u16::MAX));
    for id in copy.subscription_ids.iter().take(usize::from(u16::MAX)) {
        w.u32(*id);
    }
}

fn read_copy(r: &mut Reader<'_>) -> Result<CopyFields, Corrupt> {
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

fn write_publish(w: &mut Writer, publish: &Publish) {
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

fn read_publish(r: &mut Reader<'_>) -> Result<Publish, Corrupt> {
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
    use super::*;
    use bytes::Bytes;

    fn message() -> Arc<Message> {
        let properties = PublishProperties {
            user_properties: vec![(ByteString::from("k"), ByteString::from("v"))],
            content_type: Some(ByteString::from("text/plain")),
            message_expiry_interval: Some(60),
            ..PublishProperties::default()
        };
        Message::from_publish(
            Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: true,
                topic: ByteString::from("a/b"),
                packet_id: Some(7),
                payload: Bytes::from_static(b"hello"),
                properties,
            },
            ByteString::from("a/b"),
            Some(3),
            Some(ByteString::from("pub-1")),
        )
    }

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
    fn session_round_trip() {
        let session = StoredSession {
            expiry_interval: 300,
            disconnected_at_ms: Some(1_700_000_000_000),
            subscriptions: vec![
                (
                    "$share/g/x/#".to_owned(),
                    SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        no_local: false,
                        retain_as_published: true,
                        retain_handling: RetainHandling::DoNotSend,
                    },
                    Some(12),
                ),
                ("y".to_owned(), SubscriptionOptions::default(), None),
            ],
            will: Some(LastWill {
                topic: ByteString::from("will/t"),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: WillProperties {
                    will_delay_interval: Some(30),
                    ..WillProperties::default()
                },
            }),
            owner: Owner::User(ByteString::from("alice")),
        };
        assert_eq!(decode_session(&encode_session(&session)).unwrap(), session);
        for owner in [Owner::Anonymous, Owner::Unrecorded] {
            let session = StoredSession {
                owner,
                ..session.clone()
            };
            assert_eq!(decode_session(&encode_session(&session)).unwrap(), session);
        }
    }

    #[test]
    fn a_session_record_without_an_owner_reads_as_unrecorded() {
        let session = StoredSession {
            expiry_interval: 300,
            disconnected_at_ms: None,
            subscriptions: Vec::new(),
            will: None,
            owner: Owner::Anonymous,
        };
        let mut value = encode_session(&session);
        // Records written before owners were kept end where the owner tag now starts.
        value.truncate(value.len() - CHECKSUM_LEN - 1);
        let value = seal(value);
        assert_eq!(
            decode_session(&value).unwrap().owner,
            Owner::Unrecorded,
            "an unknown owner must not read as anonymous, or an upgrade locks users out"
        );
    }

    #[test]
    fn inflight_round_trip() {
        let inflight = StoredInflight {
            client_id: "c".to_owned(),
            packet_id: 65535,
            released: true,
            copy: CopyFields {
                qos: QoS::ExactlyOnce,
                retain: true,
                subscription_ids: vec![],
            },
        };
        assert_eq!(
            decode_inflight(&encode_inflight(&inflight)).unwrap(),
            inflight
        );
    }

    #[test]
    fn foreign_and_cut_records_are_refused() {
        let value = encode_entry(&message(), None, Clock::now());
        assert!(decode_entry(&value[..value.len() - 3], Clock::now()).is_err());
        let mut foreign = value.clone();
        foreign[0] = 99;
        assert!(decode_entry(&foreign, Clock::now()).is_err());
        assert!(decode_session(&[]).is_err());
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
