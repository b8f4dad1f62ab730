//! MQTT 5 properties (spec §2.2.2): one generic reader that knows each identifier's type and the
//! rules shared by all packets, and one small mapping per packet kind onto its typed set.

use bytes::{Buf, Bytes};
use bytestring::ByteString;

use super::sink::{Counter, Sink};
use super::string::{read_binary, read_string, read_u16, read_u32, read_u8};
use super::{varint, DecodeError};
use crate::packet::property_id::*;
use crate::packet::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, QoS, SubscribeProperties, UnsubscribeProperties, WillProperties,
};

/// A property value, typed by its identifier.
pub(crate) enum Value {
    Byte(u8),
    U16(u16),
    /// Four Byte Integer and Variable Byte Integer alike.
    U32(u32),
    Str(ByteString),
    Bin(Bytes),
    Pair(ByteString, ByteString),
}

fn not_allowed() -> DecodeError {
    // The spec names no reason code for a misplaced identifier; the packet does not follow its
    // grammar, so it is malformed (HiveMQ and EMQX answer the same).
    DecodeError::Malformed("property not allowed in this packet")
}

/// Reads the property length and the properties, calling `apply` once per property.
/// `multi_sub_id` allows the Subscription Identifier to repeat (PUBLISH only, §3.3.2.3.8).
pub(crate) fn read<F>(r: &mut Bytes, multi_sub_id: bool, mut apply: F) -> Result<(), DecodeError>
where
    F: FnMut(u8, Value) -> Result<(), DecodeError>,
{
    let len = varint::read(r)? as usize;
    if len == 0 {
        return Ok(());
    }
    if len > r.len() {
        return Err(DecodeError::Malformed("property length exceeds packet"));
    }
    let mut p = r.split_to(len);
    // Identifiers are all below 64, so one word records which ones were seen.
    let mut seen: u64 = 0;
    while p.has_remaining() {
        let id = read_u8(&mut p)?;
        if id >= 64 {
            return Err(DecodeError::Malformed("unknown property identifier"));
        }
        let repeatable = id == USER_PROPERTY || (multi_sub_id && id == SUBSCRIPTION_IDENTIFIER);
        if !repeatable && seen & (1 << id) != 0 {
            return Err(DecodeError::Protocol("duplicate property"));
        }
        seen |= 1 << id;
        let value = match id {
            PAYLOAD_FORMAT_INDICATOR
            | REQUEST_PROBLEM_INFORMATION
            | REQUEST_RESPONSE_INFORMATION
            | RETAIN_AVAILABLE
            | WILDCARD_SUBSCRIPTION_AVAILABLE
            | SUBSCRIPTION_IDENTIFIER_AVAILABLE
            | SHARED_SUBSCRIPTION_AVAILABLE
            | MAXIMUM_QOS => {
                let b = read_u8(&mut p)?;
                if b > 1 {
                    return Err(DecodeError::Protocol("property byte must be 0 or 1"));
                }
                Value::Byte(b)
            }
            SERVER_KEEP_ALIVE | TOPIC_ALIAS_MAXIMUM => Value::U16(read_u16(&mut p)?),
            RECEIVE_MAXIMUM => match read_u16(&mut p)? {
                0 => return Err(DecodeError::Protocol("Receive Maximum 0")),
                v => Value::U16(v),
            },
            TOPIC_ALIAS => match read_u16(&mut p)? {
                0 => return Err(DecodeError::TopicAliasInvalid("Topic Alias 0")),
                v => Value::U16(v),
            },
            MESSAGE_EXPIRY_INTERVAL | SESSION_EXPIRY_INTERVAL | WILL_DELAY_INTERVAL => {
                Value::U32(read_u32(&mut p)?)
            }
            MAXIMUM_PACKET_SIZE => match read_u32(&mut p)? {
                0 => return Err(DecodeError::Protocol("Maximum Packet Size 0")),
                v => Value::U32(v),
            },
            SUBSCRIPTION_IDENTIFIER => match varint::read(&mut p)? {
                0 => return Err(DecodeError::Protocol("Subscription Identifier 0")),
                v => Value::U32(v),
            },
            CONTENT_TYPE
            | RESPONSE_TOPIC
            | ASSIGNED_CLIENT_IDENTIFIER
            | AUTHENTICATION_METHOD
            | RESPONSE_INFORMATION
            | SERVER_REFERENCE
            | REASON_STRING => Value::Str(read_string(&mut p)?),
            CORRELATION_DATA | AUTHENTICATION_DATA => Value::Bin(read_binary(&mut p)?),
            USER_PROPERTY => {
                let k = read_string(&mut p)?;
                Value::Pair(k, read_string(&mut p)?)
            }
            _ => return Err(DecodeError::Malformed("unknown property identifier")),
        };
        apply(id, value)?;
    }
    Ok(())
}

/// Builds a per-packet decoder from `(identifier, variant) => field` lines; any other
/// identifier is rejected as not belonging to the packet.
macro_rules! decoder {
    ($name:ident, $ty:ty, $multi:expr, { $($id:pat => |$p:ident, $v:pat_param| $body:expr),* $(,)? }) => {
        pub(crate) fn $name(r: &mut Bytes) -> Result<$ty, DecodeError> {
            // Most packets carry no properties: skip the generic reader for them.
            if r.first() == Some(&0) {
                r.advance(1);
                return Ok(<$ty>::default());
            }
            let mut props = <$ty>::default();
            read(r, $multi, |id, value| {
                match (id, value) {
                    $(($id, $v) => {
                        let $p = &mut props;
                        $body;
                    })*
                    (USER_PROPERTY, Value::Pair(k, v)) => props.user_properties.push((k, v)),
                    _ => return Err(not_allowed()),
                }
                Ok(())
            })?;
            Ok(props)
        }
    };
}

decoder!(read_connect, ConnectProperties, false, {
    SESSION_EXPIRY_INTERVAL => |p, Value::U32(v)| p.session_expiry_interval = Some(v),
    RECEIVE_MAXIMUM => |p, Value::U16(v)| p.receive_maximum = Some(v),
    MAXIMUM_PACKET_SIZE => |p, Value::U32(v)| p.maximum_packet_size = Some(v),
    TOPIC_ALIAS_MAXIMUM => |p, Value::U16(v)| p.topic_alias_maximum = Some(v),
    REQUEST_RESPONSE_INFORMATION => |p, Value::Byte(v)| p.request_response_information = Some(v == 1),
    REQUEST_PROBLEM_INFORMATION => |p, Value::Byte(v)| p.request_problem_information = Some(v == 1),
    AUTHENTICATION_METHOD => |p, Value::Str(v)| p.authentication_method = Some(v),
    AUTHENTICATION_DATA => |p, Value::Bin(v)| p.authentication_data = Some(v),
});

decoder!(read_will, WillProperties, false, {
    WILL_DELAY_INTERVAL => |p, Value::U32(v)| p.will_delay_interval = Some(v),
    PAYLOAD_FORMAT_INDICATOR => |p, Value::Byte(v)| p.payload_format_indicator = Some(v),
    MESSAGE_EXPIRY_INTERVAL => |p, Value::U32(v)| p.message_expiry_interval = Some(v),
    CONTENT_TYPE => |p, Value::Str(v)| p.content_type = Some(v),
    RESPONSE_TOPIC => |p, Value::Str(v)| p.response_topic = Some(v),
    CORRELATION_DATA => |p, Value::Bin(v)| p.correlation_data = Some(v),
});

decoder!(read_connack, ConnAckProperties, false, {
    SESSION_EXPIRY_INTERVAL => |p, Value::U32(v)| p.session_expiry_interval = Some(v),
    RECEIVE_MAXIMUM => |p, Value::U16(v)| p.receive_maximum = Some(v),
    MAXIMUM_QOS => |p, Value::Byte(v)| p.maximum_qos = QoS::from_u8(v),
    RETAIN_AVAILABLE => |p, Value::Byte(v)| p.retain_available = Some(v == 1),
    MAXIMUM_PACKET_SIZE => |p, Value::U32(v)| p.maximum_packet_size = Some(v),
    ASSIGNED_CLIENT_IDENTIFIER => |p, Value::Str(v)| p.assigned_client_identifier = Some(v),
    TOPIC_ALIAS_MAXIMUM => |p, Value::U16(v)| p.topic_alias_maximum = Some(v),
    REASON_STRING => |p, Value::Str(v)| p.reason_string = Some(v),
    WILDCARD_SUBSCRIPTION_AVAILABLE => |p, Value::Byte(v)| p.wildcard_subscription_available = Some(v == 1),
    SUBSCRIPTION_IDENTIFIER_AVAILABLE => |p, Value::Byte(v)| p.subscription_identifiers_available = Some(v == 1),
    SHARED_SUBSCRIPTION_AVAILABLE => |p, Value::Byte(v)| p.shared_subscription_available = Some(v == 1),
    SERVER_KEEP_ALIVE => |p, Value::U16(v)| p.server_keep_alive = Some(v),
    RESPONSE_INFORMATION => |p, Value::Str(v)| p.response_information = Some(v),
    SERVER_REFERENCE => |p, Value::Str(v)| p.server_reference = Some(v),
    AUTHENTICATION_METHOD => |p, Value::Str(v)| p.authentication_method = Some(v),
    AUTHENTICATION_DATA => |p, Value::Bin(v)| p.authentication_data = Some(v),
});

decoder!(read_publish, PublishProperties, true, {
    PAYLOAD_FORMAT_INDICATOR => |p, Value::Byte(v)| p.payload_format_indicator = Some(v),
    MESSAGE_EXPIRY_INTERVAL => |p, Value::U32(v)| p.message_expiry_interval = Some(v),
    TOPIC_ALIAS => |p, Value::U16(v)| p.topic_alias = Some(v),
    RESPONSE_TOPIC => |p, Value::Str(v)| p.response_topic = Some(v),
    CORRELATION_DATA => |p, Value::Bin(v)| p.correlation_data = Some(v),
    SUBSCRIPTION_IDENTIFIER => |p, Value::U32(v)| p.subscription_identifiers.push(v),
    CONTENT_TYPE => |p, Value::Str(v)| p.content_type = Some(v),
});

decoder!(read_ack, AckProperties, false, {
    REASON_STRING => |p, Value::Str(v)| p.reason_string = Some(v),
});

decoder!(read_subscribe, SubscribeProperties, false, {
    SUBSCRIPTION_IDENTIFIER => |p, Value::U32(v)| p.subscription_identifier = Some(v),
});

decoder!(read_unsubscribe, UnsubscribeProperties, false, {});

decoder!(read_disconnect, DisconnectProperties, false, {
    SESSION_EXPIRY_INTERVAL => |p, Value::U32(v)| p.session_expiry_interval = Some(v),
    REASON_STRING => |p, Value::Str(v)| p.reason_string = Some(v),
    SERVER_REFERENCE => |p, Value::Str(v)| p.server_reference = Some(v),
});

decoder!(read_auth, AuthProperties, false, {
    AUTHENTICATION_METHOD => |p, Value::Str(v)| p.authentication_method = Some(v),
    AUTHENTICATION_DATA => |p, Value::Bin(v)| p.authentication_data = Some(v),
    REASON_STRING => |p, Value::Str(v)| p.reason_string = Some(v),
});

/// A typed property set that can describe its own wire form.
pub(crate) trait Props {
    fn emit<S: Sink>(&self, s: &mut S);
}

/// Writes the property length, then the properties.
pub(crate) fn write<S: Sink, P: Props>(s: &mut S, props: &P) {
    let mut c = Counter::default();
    props.emit(&mut c);
    if let Some(e) = c.error {
        s.fail(e);
    }
    s.varint(c.len);
    props.emit(s);
}

fn byte<S: Sink>(s: &mut S, id: u8, v: Option<u8>) {
    if let Some(v) = v {
        s.u8(id);
        s.u8(v);
    }
}

fn flag<S: Sink>(s: &mut S, id: u8, v: Option<bool>) {
    byte(s, id, v.map(u8::from));
}

fn two<S: Sink>(s: &mut S, id: u8, v: Option<u16>) {
    if let Some(v) = v {
        s.u8(id);
        s.u16(v);
    }
}

fn four<S: Sink>(s: &mut S, id: u8, v: Option<u32>) {
    if let Some(v) = v {
        s.u8(id);
        s.u32(v);
    }
}

fn string<S: Sink>(s: &mut S, id: u8, v: &Option<ByteString>) {
    if let Some(v) = v {
        s.u8(id);
        s.string(v.as_bytes(), "property string");
    }
}

fn binary<S: Sink>(s: &mut S, id: u8, v: &Option<Bytes>) {
    if let Some(v) = v {
        s.u8(id);
        s.string(v, "property binary data");
    }
}

fn users<S: Sink>(s: &mut S, v: &[(ByteString, ByteString)]) {
    for (k, v) in v {
        s.u8(USER_PROPERTY);
        s.string(k.as_bytes(), "user property name");
        s.string(v.as_bytes(), "user property value");
    }
}

impl Props for ConnectProperties {
    fn emit<S: Sink>(&self, s: &mut S) {
        four(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        two(s, RECEIVE_MAXIMUM, self.receive_maximum);
        four(s, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        two(s, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        flag(
            s,
            REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
        );
        flag(
            s,
            REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
        );
        users(s, &self.user_properties);
        string(s, AUTHENTICATION_METHOD, &self.authentication_method);
        binary(s, AUTHENTICATION_DATA, &self.authentication_data);
    }
}

impl Props for WillProperties {
    fn emit<S: Sink>(&self, s: &mut S) {
        four(s, WILL_DELAY_INTERVAL, self.will_delay_interval);
        byte(s, PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        four(s, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        string(s, CONTENT_TYPE, &self.content_type);
        string(s, RESPONSE_TOPIC, &self.response_topic);
        binary(s, CORRELATION_DATA, &self.correlation_data);
        users(s, &self.user_properties);
    }
}

impl Props for ConnAckProperties {
    fn emit<S: Sink>(&self, s: &mut S) {
        four(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        two(s, RECEIVE_MAXIMUM, self.receive_maximum);
        // Only 0 and 1 may be sent (§3.2.2.3.4); 2 is expressed by leaving the property out.
        if let Some(q) = self.maximum_qos {
            if q == QoS::ExactlyOnce {
                s.fail(super::EncodeError::Invalid("Maximum QoS 2 must be omitted"));
            }
            byte(s, MAXIMUM_QOS, Some(q as u8));
        }
        flag(s, RETAIN_AVAILABLE, self.retain_available);
        four(s, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        string(
            s,
            ASSIGNED_CLIENT_IDENTIFIER,
            &self.assigned_client_identifier,
        );
        two(s, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        string(s, REASON_STRING, &self.reason_string);
        users(s, &self.user_properties);
        flag(
            s,
            WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available,
        );
        flag(
            s,
            SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            self.subscription_identifiers_available,
        );
        flag(
            s,
            SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available,
        );
        two(s, SERVER_KEEP_ALIVE, self.server_keep_alive);
        string(s, RESPONSE_INFORMATION, &self.response_information);
        string(s, SERVER_REFERENCE, &self.server_reference);
        string(s, AUTHENTICATION_METHOD, &self.authentication_method);
        binary(s, AUTHENTICATION_DATA, &self.authentication_data);
    }
}

impl Props for PublishProperties {
    #[inline]
    fn emit<S: Sink>(&self, s: &mut S) {
        byte(s, PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        four(s, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        two(s, TOPIC_ALIAS, self.topic_alias);
        string(s, RESPONSE_TOPIC, &self.response_topic);
        binary(s, CORRELATION_DATA, &self.correlation_data);
        users(s, &self.user_properties);
        for &id in &self.subscription_identifiers {
            sub_id(s, id);
        }
        string(s, CONTENT_TYPE, &self.content_type);
    }
}

fn sub_id<S: Sink>(s: &mut S, id: u32) {
    if id == 0 || id > varint::MAX {
        s.fail(super::EncodeError::Invalid(
            "Subscription Identifier out of range",
        ));
    }
    s.u8(SUBSCRIPTION_IDENTIFIER);
    s.varint(id.min(varint::MAX) as usize);
}

impl Props for AckProperties {
    fn emit<S: Sink>(&self, s: &mut S) {
        string(s, REASON_STRING, &self.reason_string);
        users(s, &self.user_properties);
    }
}

impl Props for SubscribeProperties {
    fn emit<S: Sink>(&self, s: &mut S) {
        if let Some(id) = self.subscription_identifier {
            sub_id(s, id);
        }
        users(s, &self.user_properties);
    }
}

impl Props for UnsubscribeProperties {
    fn emit<S: Sink>(&self, s: &mut S) {
        users(s, &self.user_properties);
    }
}

impl Props for DisconnectProperties {
    fn emit<S: Sink>(&self, s: &mut S) {
        four(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        string(s, REASON_STRING, &self.reason_string);
        users(s, &self.user_properties);
        string(s, SERVER_REFERENCE, &self.server_reference);
    }
}

impl Props for AuthProperties {
    fn emit<S: Sink>(&self, s: &mut S) {
        string(s, AUTHENTICATION_METHOD, &self.authentication_method);
        binary(s, AUTHENTICATION_DATA, &self.authentication_data);
        string(s, REASON_STRING, &self.reason_string);
        users(s, &self.user_properties);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn bytes(b: &[u8]) -> Bytes {
        Bytes::copy_from_slice(b)
    }

    #[test]
    fn user_properties_keep_order_and_repeat() {
        let mut r = bytes(b"\x0e\x26\x00\x01a\x00\x01b\x26\x00\x01a\x00\x01c");
        let p = read_ack(&mut r).unwrap();
        assert_eq!(p.user_properties.len(), 2);
        assert_eq!(&*p.user_properties[1].1, "c");
    }

    #[test]
    fn duplicate_is_protocol_error() {
        let mut r = bytes(b"\x04\x1f\x00\x05x");
        assert!(
            matches!(read_ack(&mut r), Err(DecodeError::Malformed(_))),
            "truncated"
        );
        let mut r = bytes(b"\x06\x1f\x00\x00\x1f\x00\x00");
        assert!(matches!(read_ack(&mut r), Err(DecodeError::Protocol(_))));
    }

    #[test]
    fn subscription_identifier_repeats_only_in_publish() {
        let mut r = bytes(b"\x04\x0b\x01\x0b\x02");
        assert_eq!(
            read_publish(&mut r).unwrap().subscription_identifiers,
            vec![1, 2]
        );
        let mut r = bytes(b"\x04\x0b\x01\x0b\x02");
        assert!(matches!(
            read_subscribe(&mut r),
            Err(DecodeError::Protocol(_))
        ));
    }

    #[test]
    fn foreign_property_is_malformed() {
        // Topic Alias in an ack.
        let mut r = bytes(b"\x03\x23\x00\x01");
        assert!(matches!(read_ack(&mut r), Err(DecodeError::Malformed(_))));
        // User Property is allowed everywhere, even in UNSUBSCRIBE.
        let mut r = bytes(b"\x05\x26\x00\x00\x00\x00");
        assert_eq!(read_unsubscribe(&mut r).unwrap().user_properties.len(), 1);
    }

    #[test]
    fn out_of_range_values() {
        let cases: &[(&[u8], DecodeError)] = &[
            (
                b"\x03\x21\x00\x00",
                DecodeError::Protocol("Receive Maximum 0"),
            ),
            (
                b"\x05\x27\x00\x00\x00\x00",
                DecodeError::Protocol("Maximum Packet Size 0"),
            ),
            (
                b"\x02\x17\x02",
                DecodeError::Protocol("property byte must be 0 or 1"),
            ),
        ];
        for (wire, err) in cases {
            assert_eq!(read_connect(&mut bytes(wire)).unwrap_err(), *err);
        }
        assert_eq!(
            read_publish(&mut bytes(b"\x03\x23\x00\x00")).unwrap_err(),
            DecodeError::TopicAliasInvalid("Topic Alias 0")
        );
        assert_eq!(
            read_connack(&mut bytes(b"\x02\x24\x02")).unwrap_err(),
            DecodeError::Protocol("property byte must be 0 or 1")
        );
    }

    #[test]
    fn length_past_packet_is_malformed() {
        assert!(matches!(
            read_ack(&mut bytes(b"\x05\x1f\x00")),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn write_then_read() {
        let p = ConnAckProperties {
            receive_maximum: Some(10),
            maximum_qos: Some(QoS::AtLeastOnce),
            reason_string: Some("hi".into()),
            user_properties: vec![("k".into(), "v".into())],
            authentication_data: Some(Bytes::from_static(b"\x00\xff")),
            ..Default::default()
        };
        let mut out = BytesMut::new();
        write(&mut out, &p);
        let mut r = out.freeze();
        assert_eq!(read_connack(&mut r).unwrap(), p);
        assert!(r.is_empty());
    }
}
