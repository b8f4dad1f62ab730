//! A session as stored: its expiry, subscriptions, will and owner, enough to rebuild it
//! offline.

use bytestring::ByteString;

use super::entry::{read_publish, write_publish};
use super::record::{Corrupt, Reader, Writer};
use crate::broker::owner::Owner;
use crate::packet::{
    LastWill, Publish, PublishProperties, QoS, RetainHandling, SubscriptionOptions, WillProperties,
};

/// A session record's owner tag.
const OWNER_ANONYMOUS: u8 = 0;
const OWNER_USER: u8 = 1;
const OWNER_UNRECORDED: u8 = 2;

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

#[cfg(test)]
mod tests {
    use super::super::record::{seal, CHECKSUM_LEN};
    use super::*;
    use bytes::Bytes;

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
}
