//! The byte layout of every record the store keeps. A message is kept as the MQTT 5 PUBLISH
//! that carries it (our own codec writes and reads it, properties and all), framed by the few
//! facts a PUBLISH cannot hold: when it expires in wall-clock time and who published it.
//!
//! Every value starts with [`FORMAT`] and ends with the CRC32C of everything before it (four
//! bytes, big-endian). [`record::Reader::new`], which every decode goes through, checks both: a value
//! with another first byte, or whose checksum does not match (a bit flipped on disk, a torn
//! write redb did not catch), is refused as corrupt, never guessed at. Times are Unix
//! milliseconds, so expiry keeps counting while the broker is down.
//!
//! [`record`] holds the checked writer and reader every layout below goes through; [`entry`]
//! queued copies and retained messages (and the message layout a will shares); [`session`]
//! session records; [`inflight`] outbound exchanges; [`clock`] the conversion between the
//! process's clock and the wall-clock times stored.

mod clock;
mod entry;
mod inflight;
mod record;
mod session;

pub use clock::{unix_now_ms, Clock};
pub use entry::{
    decode_entry, decode_retained, encode_entry, encode_retained, entry_weight, CopyFields,
    StoredEntry,
};
pub use inflight::{decode_inflight, encode_inflight, StoredInflight};
pub use record::{upgrade_v1, Corrupt, FORMAT, FORMAT_V1};
pub use session::{decode_session, encode_session, StoredSession};

/// A retained QoS 1 message with properties, an expiry and a publisher, for the tests below.
#[cfg(test)]
fn message() -> std::sync::Arc<crate::broker::message::Message> {
    use crate::broker::message::Message;
    use crate::packet::{Publish, PublishProperties, QoS};
    use bytestring::ByteString;
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
            payload: bytes::Bytes::from_static(b"hello"),
            properties,
        },
        ByteString::from("a/b"),
        Some(3),
        Some(ByteString::from("pub-1")),
    )
}
