//! Proptest strategies for valid packets, shared by the round-trip and differential tests.

use bytes::Bytes;
use bytestring::ByteString;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use sharq::packet::*;

/// Valid UTF-8 without U+0000, including multi-byte characters.
pub fn string() -> impl Strategy<Value = ByteString> {
    "[a-zA-Z0-9/ é€😀+#$_-]{0,12}".prop_map(ByteString::from)
}

/// A topic name: non-empty, no wildcards.
pub fn topic() -> impl Strategy<Value = ByteString> {
    "[a-zA-Z0-9/ é€😀$_-]{1,16}".prop_map(ByteString::from)
}

pub fn filter() -> impl Strategy<Value = ByteString> {
    "[a-zA-Z0-9/+#$_-]{1,16}".prop_map(ByteString::from)
}

pub fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

pub fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

pub fn pid() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

pub fn users(v5: bool) -> BoxedStrategy<UserProperties> {
    if v5 {
        vec((string(), string()), 0..3).boxed()
    } else {
        Just(Vec::new()).boxed()
    }
}

fn nz16() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn nz32() -> impl Strategy<Value = u32> {
    1..=u32::MAX
}

fn sub_id() -> impl Strategy<Value = u32> {
    1..=268_435_455u32
}

pub fn reason() -> impl Strategy<Value = ReasonCode> {
    prop_oneof![Just(ReasonCode(0)), any::<u8>().prop_map(ReasonCode)]
}

pub fn ack_props(v5: bool) -> BoxedStrategy<AckProperties> {
    if !v5 {
        return Just(AckProperties::default()).boxed();
    }
    (option::of(string()), users(true))
        .prop_map(|(reason_string, user_properties)| AckProperties {
            reason_string,
            user_properties,
        })
        .boxed()
}

pub fn will(v5: bool) -> impl Strategy<Value = LastWill> {
    let props = if v5 {
        (
            option::of(any::<u32>()),
            option::of(0..=1u8),
            option::of(any::<u32>()),
            option::of(string()),
            option::of(topic()),
            option::of(binary()),
            users(true),
        )
            .prop_map(|(a, b, c, d, e, f, g)| WillProperties {
                will_delay_interval: a,
                payload_format_indicator: b,
                message_expiry_interval: c,
                content_type: d,
                response_topic: e,
                correlation_data: f,
                user_properties: g,
            })
            .boxed()
    } else {
        Just(WillProperties::default()).boxed()
    };
    (topic(), binary(), qos(), any::<bool>(), props).prop_map(
        |(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties,
        },
    )
}

pub fn connect(protocol: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = protocol.is_v5();
    let props = if v5 {
        (
            option::of(any::<u32>()),
            option::of(nz16()),
            option::of(nz32()),
            option::of(any::<u16>()),
            option::of(any::<bool>()),
            option::of(any::<bool>()),
            users(true),
            option::of(string()),
            option::of(binary()),
        )
            .prop_map(|(a, b, c, d, e, f, g, h, i)| ConnectProperties {
                session_expiry_interval: a,
                receive_maximum: b,
                maximum_packet_size: c,
                topic_alias_maximum: d,
                request_response_information: e,
                request_problem_information: f,
                user_properties: g,
                authentication_method: h,
                authentication_data: i,
            })
            .boxed()
    } else {
        Just(ConnectProperties::default()).boxed()
    };
    (
        any::<bool>(),
        any::<u16>(),
        string(),
        option::of(will(v5)),
        option::of(string()),
        option::of(binary()),
        props,
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // 3.1.1 forbids a password without a user name (§3.1.2.9).
                let password = if v5 || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
}

pub fn connack(v5: bool) -> BoxedStrategy<Packet> {
    if !v5 {
        let codes = prop_oneof![
            Just(0x00u8),
            Just(0x84),
            Just(0x85),
            Just(0x88),
            Just(0x86),
            Just(0x87)
        ];
        return (any::<bool>(), codes)
            .prop_map(|(session_present, rc)| {
                Packet::ConnAck(ConnAck {
                    session_present,
                    reason_code: ReasonCode(rc),
                    properties: Default::default(),
                })
            })
            .boxed();
    }
    let a = (
        option::of(any::<u32>()),
        option::of(nz16()),
        option::of(prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]),
        option::of(any::<bool>()),
        option::of(nz32()),
        option::of(string()),
        option::of(any::<u16>()),
        option::of(string()),
        users(true),
    );
    let b = (
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(any::<u16>()),
        option::of(string()),
        option::of(string()),
        option::of(string()),
        option::of(binary()),
    );
    (any::<bool>(), reason(), a, b)
        .prop_map(|(session_present, reason_code, a, b)| {
            Packet::ConnAck(ConnAck {
                session_present,
                reason_code,
                properties: ConnAckProperties {
                    session_expiry_interval: a.0,
                    receive_maximum: a.1,
                    maximum_qos: a.2,
                    retain_available: a.3,
                    maximum_packet_size: a.4,
                    assigned_client_identifier: a.5,
                    topic_alias_maximum: a.6,
                    reason_string: a.7,
                    user_properties: a.8,
                    wildcard_subscription_available: b.0,
                    subscription_identifiers_available: b.1,
                    shared_subscription_available: b.2,
                    server_keep_alive: b.3,
                    response_information: b.4,
                    server_reference: b.5,
                    authentication_method: b.6,
                    authentication_data: b.7,
                },
            })
        })
        .boxed()
}

pub fn publish_props(v5: bool) -> BoxedStrategy<PublishProperties> {
    if !v5 {
        return Just(PublishProperties::default()).boxed();
    }
    (
        option::of(0..=1u8),
        option::of(any::<u32>()),
        option::of(nz16()),
        option::of(topic()),
        option::of(binary()),
        users(true),
        vec(sub_id(), 0..3),
        option::of(string()),
    )
        .prop_map(|(a, b, c, d, e, f, g, h)| PublishProperties {
            payload_format_indicator: a,
            message_expiry_interval: b,
            topic_alias: c,
            response_topic: d,
            correlation_data: e,
            user_properties: f,
            subscription_identifiers: g,
            content_type: h,
        })
        .boxed()
}

pub fn publish(v5: bool) -> impl Strategy<Value = Packet> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic(),
        any::<bool>(),
        pid(),
        vec(any::<u8>(), 0..128),
        publish_props(v5),
    )
        .prop_map(
            move |(qos, dup, retain, topic, alias_only, id, payload, properties)| {
                // v5 may replace the topic by an alias.
                let topic = if v5 && alias_only && properties.topic_alias.is_some() {
                    ByteString::new()
                } else {
                    topic
                };
                Packet::Publish(Publish {
                    dup: dup && qos != QoS::AtMostOnce,
                    qos,
                    retain,
                    topic,
                    packet_id: (qos != QoS::AtMostOnce).then_some(id),
                    payload: Bytes::from(payload),
                    properties,
                })
            },
        )
}

pub fn ack(v5: bool) -> impl Strategy<Value = Ack> {
    let rc = if v5 {
        reason().boxed()
    } else {
        Just(ReasonCode(0)).boxed()
    };
    (pid(), rc, ack_props(v5)).prop_map(|(packet_id, reason_code, properties)| Ack {
        packet_id,
        reason_code,
        properties,
    })
}

pub fn options(v5: bool) -> impl Strategy<Value = SubscriptionOptions> {
    let rh = prop_oneof![
        Just(RetainHandling::SendAtSubscribe),
        Just(RetainHandling::SendIfNew),
        Just(RetainHandling::DoNotSend)
    ];
    (qos(), any::<bool>(), any::<bool>(), rh).prop_map(move |(qos, nl, rap, rh)| {
        if v5 {
            SubscriptionOptions {
                qos,
                no_local: nl,
                retain_as_published: rap,
                retain_handling: rh,
            }
        } else {
            SubscriptionOptions {
                qos,
                ..Default::default()
            }
        }
    })
}

pub fn subscribe(v5: bool) -> impl Strategy<Value = Packet> {
    let props = if v5 {
        (option::of(sub_id()), users(true))
            .prop_map(
                |(subscription_identifier, user_properties)| SubscribeProperties {
                    subscription_identifier,
                    user_properties,
                },
            )
            .boxed()
    } else {
        Just(SubscribeProperties::default()).boxed()
    };
    (pid(), vec((filter(), options(v5)), 1..5), props).prop_map(|(packet_id, f, properties)| {
        Packet::Subscribe(Subscribe {
            packet_id,
            filters: f
                .into_iter()
                .map(|(filter, options)| TopicSubscription { filter, options })
                .collect(),
            properties,
        })
    })
}

pub fn suback(v5: bool) -> impl Strategy<Value = Packet> {
    let rc = if v5 {
        reason().boxed()
    } else {
        prop_oneof![
            Just(ReasonCode(0)),
            Just(ReasonCode(1)),
            Just(ReasonCode(2)),
            Just(ReasonCode(0x80))
        ]
        .boxed()
    };
    (pid(), vec(rc, 1..5), ack_props(v5)).prop_map(|(packet_id, reason_codes, properties)| {
        Packet::SubAck(SubAck {
            packet_id,
            reason_codes,
            properties,
        })
    })
}

pub fn unsubscribe(v5: bool) -> impl Strategy<Value = Packet> {
    (pid(), vec(filter(), 1..5), users(v5)).prop_map(|(packet_id, filters, user_properties)| {
        Packet::Unsubscribe(Unsubscribe {
            packet_id,
            filters,
            properties: UnsubscribeProperties { user_properties },
        })
    })
}

pub fn unsuback(v5: bool) -> impl Strategy<Value = Packet> {
    let codes = if v5 {
        vec(reason(), 1..5).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (pid(), codes, ack_props(v5)).prop_map(|(packet_id, reason_codes, properties)| {
        Packet::UnsubAck(UnsubAck {
            packet_id,
            reason_codes,
            properties,
        })
    })
}

pub fn disconnect(v5: bool) -> BoxedStrategy<Packet> {
    if !v5 {
        return Just(Packet::Disconnect(Disconnect::default())).boxed();
    }
    (
        reason(),
        option::of(any::<u32>()),
        option::of(string()),
        users(true),
        option::of(string()),
    )
        .prop_map(|(reason_code, a, b, c, d)| {
            Packet::Disconnect(Disconnect {
                reason_code,
                properties: DisconnectProperties {
                    session_expiry_interval: a,
                    reason_string: b,
                    user_properties: c,
                    server_reference: d,
                },
            })
        })
        .boxed()
}

pub fn auth() -> impl Strategy<Value = Packet> {
    (
        reason(),
        option::of(string()),
        option::of(binary()),
        option::of(string()),
        users(true),
    )
        .prop_map(|(reason_code, a, b, c, d)| {
            Packet::Auth(Auth {
                reason_code,
                properties: AuthProperties {
                    authentication_method: a,
                    authentication_data: b,
                    reason_string: c,
                    user_properties: d,
                },
            })
        })
}

/// Any packet other than CONNECT that a connection of `version` may carry.
pub fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = version.is_v5();
    let common = prop_oneof![
        connack(v5),
        publish(v5),
        ack(v5).prop_map(Packet::PubAck),
        ack(v5).prop_map(Packet::PubRec),
        ack(v5).prop_map(Packet::PubRel),
        ack(v5).prop_map(Packet::PubComp),
        subscribe(v5),
        suback(v5),
        unsubscribe(v5),
        unsuback(v5),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(v5),
    ];
    if v5 {
        prop_oneof![12 => common, 1 => auth()].boxed()
    } else {
        common.boxed()
    }
}
