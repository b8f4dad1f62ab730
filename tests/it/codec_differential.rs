//! Differential tests against `rmqtt-codec` 0.3: its decoder must read our encoding into an
//! equivalent packet, and ours must read its encoding into an equivalent packet.
//!
//! rmqtt's model is narrower than ours (reason codes are enums of the defined values, several
//! properties collapse to a default), so each generated packet is first `prepare`d into the
//! subset both models express, and decoded packets are compared after `norm`, which writes every
//! "absent" and "default" property the same way.

use std::num::{NonZeroU16, NonZeroU32};

use crate::codec_strategies as strat;
use bytes::BytesMut;
use proptest::prelude::*;
use rmqtt_codec::{types as rt, v3 as r3, v5 as r5};
use sharq::codec::{encode, Decoder};
use sharq::packet::*;
use tokio_util::codec::{Decoder as _, Encoder as _};

// ---------- normalisation in our model ----------

fn none_if<T: PartialEq>(v: Option<T>, default: T) -> Option<T> {
    v.filter(|x| *x != default)
}

/// Writes rmqtt's implicit defaults as absent, so "sent the default" equals "sent nothing".
fn norm(p: Packet) -> Packet {
    match p {
        Packet::Connect(mut c) => {
            let pr = &mut c.properties;
            pr.session_expiry_interval = none_if(pr.session_expiry_interval, 0);
            pr.request_problem_information = none_if(pr.request_problem_information, true);
            pr.request_response_information = none_if(pr.request_response_information, false);
            pr.topic_alias_maximum = none_if(pr.topic_alias_maximum, 0);
            if let Some(w) = &mut c.will {
                w.properties.message_expiry_interval =
                    none_if(w.properties.message_expiry_interval, 0);
            }
            Packet::Connect(c)
        }
        Packet::ConnAck(mut c) => {
            let pr = &mut c.properties;
            pr.receive_maximum = none_if(pr.receive_maximum, u16::MAX);
            pr.topic_alias_maximum = none_if(pr.topic_alias_maximum, 0);
            pr.retain_available = none_if(pr.retain_available, true);
            pr.wildcard_subscription_available = none_if(pr.wildcard_subscription_available, true);
            pr.subscription_identifiers_available =
                none_if(pr.subscription_identifiers_available, true);
            pr.shared_subscription_available = none_if(pr.shared_subscription_available, true);
            Packet::ConnAck(c)
        }
        Packet::Publish(mut p) => {
            p.properties.payload_format_indicator =
                none_if(p.properties.payload_format_indicator, 0);
            p.properties.message_expiry_interval = none_if(p.properties.message_expiry_interval, 0);
            Packet::Publish(p)
        }
        p => p,
    }
}

/// Replaces values rmqtt's enums cannot hold by ones they can; the rest of the packet is kept.
fn prepare(p: Packet, v5: bool) -> Packet {
    fn ok<T: TryFrom<u8>>(rc: ReasonCode, fallback: u8) -> ReasonCode {
        if T::try_from(rc.0).is_ok() {
            rc
        } else {
            ReasonCode(fallback)
        }
    }
    let p = match p {
        // rmqtt refuses an empty client id without Clean Start at decode time. 3.1.1 §3.1.3.1
        // [MQTT-3.1.3-8] answers that with CONNACK return code 2, and MQTT 5 §3.1.3.1 lets the
        // server assign an identifier, so neither makes it a malformed packet: not compared.
        Packet::Connect(mut c) if c.client_id.is_empty() => {
            c.clean_start = true;
            Packet::Connect(c)
        }
        Packet::ConnAck(mut c) if v5 => {
            c.reason_code = ok::<r5::ConnectAckReason>(c.reason_code, 0x80);
            Packet::ConnAck(c)
        }
        Packet::PubAck(mut a) => {
            a.reason_code = ok::<r5::PublishAckReason>(a.reason_code, 0x80);
            Packet::PubAck(a)
        }
        Packet::PubRec(mut a) => {
            a.reason_code = ok::<r5::PublishAckReason>(a.reason_code, 0x80);
            Packet::PubRec(a)
        }
        Packet::PubRel(mut a) => {
            a.reason_code = ok::<r5::PublishAck2Reason>(a.reason_code, 0x92);
            Packet::PubRel(a)
        }
        Packet::PubComp(mut a) => {
            a.reason_code = ok::<r5::PublishAck2Reason>(a.reason_code, 0x92);
            Packet::PubComp(a)
        }
        Packet::SubAck(mut s) if v5 => {
            for rc in &mut s.reason_codes {
                *rc = ok::<r5::SubscribeAckReason>(*rc, 0x80);
            }
            Packet::SubAck(s)
        }
        Packet::UnsubAck(mut s) if v5 => {
            for rc in &mut s.reason_codes {
                *rc = ok::<r5::UnsubscribeAckReason>(*rc, 0x80);
            }
            Packet::UnsubAck(s)
        }
        Packet::Disconnect(mut d) => {
            d.reason_code = ok::<r5::DisconnectReasonCode>(d.reason_code, 0x80);
            Packet::Disconnect(d)
        }
        p => p,
    };
    norm(p)
}

// ---------- our model -> rmqtt ----------

fn rq(q: QoS) -> rt::QoS {
    match q {
        QoS::AtMostOnce => rt::QoS::AtMostOnce,
        QoS::AtLeastOnce => rt::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rt::QoS::ExactlyOnce,
    }
}

fn oq(q: rt::QoS) -> QoS {
    QoS::from_u8(q as u8).unwrap()
}

fn nz(id: u16) -> NonZeroU16 {
    NonZeroU16::new(id).unwrap()
}

fn rpublish(p: &Publish, v5: bool) -> rt::Publish {
    let pr = &p.properties;
    rt::Publish {
        dup: p.dup,
        retain: p.retain,
        qos: rq(p.qos),
        topic: p.topic.clone(),
        packet_id: p.packet_id.map(nz),
        payload: p.payload.clone(),
        properties: v5.then(|| r5::PublishProperties {
            topic_alias: pr.topic_alias.map(nz),
            correlation_data: pr.correlation_data.clone(),
            message_expiry_interval: pr.message_expiry_interval.and_then(NonZeroU32::new),
            content_type: pr.content_type.clone(),
            user_properties: pr.user_properties.clone(),
            is_utf8_payload: pr.payload_format_indicator == Some(1),
            response_topic: pr.response_topic.clone(),
            subscription_ids: pr
                .subscription_identifiers
                .iter()
                .map(|&i| NonZeroU32::new(i).unwrap())
                .collect(),
        }),
    }
}

fn opublish(p: rt::Publish) -> Publish {
    let properties = match p.properties {
        None => PublishProperties::default(),
        Some(pr) => PublishProperties {
            payload_format_indicator: Some(u8::from(pr.is_utf8_payload)),
            message_expiry_interval: pr.message_expiry_interval.map(NonZeroU32::get),
            topic_alias: pr.topic_alias.map(NonZeroU16::get),
            response_topic: pr.response_topic,
            correlation_data: pr.correlation_data,
            user_properties: pr.user_properties,
            subscription_identifiers: pr
                .subscription_ids
                .into_iter()
                .map(NonZeroU32::get)
                .collect(),
            content_type: pr.content_type,
        },
    };
    Publish {
        dup: p.dup,
        qos: oq(p.qos),
        retain: p.retain,
        topic: p.topic,
        packet_id: p.packet_id.map(NonZeroU16::get),
        payload: p.payload,
        properties,
    }
}

fn v3_return_code(rc: ReasonCode) -> r3::ConnectAckReason {
    use r3::ConnectAckReason::*;
    match rc.0 {
        0x00 => ConnectionAccepted,
        0x84 => UnacceptableProtocolVersion,
        0x85 => IdentifierRejected,
        0x88 | 0x89 => ServiceUnavailable,
        0x86 => BadUserNameOrPassword,
        _ => NotAuthorized,
    }
}

fn to_r3(p: &Packet) -> r3::Packet {
    match p {
        Packet::Connect(c) => r3::Packet::Connect(Box::new(r3::Connect {
            protocol: rt::Protocol(c.protocol.level()),
            clean_session: c.clean_start,
            keep_alive: c.keep_alive,
            last_will: c.will.as_ref().map(|w| r3::LastWill {
                qos: rq(w.qos),
                retain: w.retain,
                topic: w.topic.clone(),
                message: w.payload.clone(),
            }),
            client_id: c.client_id.clone(),
            username: c.username.clone(),
            password: c.password.clone(),
            cert: None,
        })),
        Packet::ConnAck(c) => r3::Packet::ConnectAck(r3::ConnectAck {
            return_code: v3_return_code(c.reason_code),
            session_present: c.session_present,
        }),
        Packet::Publish(p) => r3::Packet::Publish(Box::new(rpublish(p, false))),
        Packet::PubAck(a) => r3::Packet::PublishAck {
            packet_id: nz(a.packet_id),
        },
        Packet::PubRec(a) => r3::Packet::PublishReceived {
            packet_id: nz(a.packet_id),
        },
        Packet::PubRel(a) => r3::Packet::PublishRelease {
            packet_id: nz(a.packet_id),
        },
        Packet::PubComp(a) => r3::Packet::PublishComplete {
            packet_id: nz(a.packet_id),
        },
        Packet::Subscribe(s) => r3::Packet::Subscribe {
            packet_id: nz(s.packet_id),
            topic_filters: s
                .filters
                .iter()
                .map(|f| (f.filter.clone(), rq(f.options.qos)))
                .collect(),
        },
        Packet::SubAck(s) => r3::Packet::SubscribeAck {
            packet_id: nz(s.packet_id),
            status: s
                .reason_codes
                .iter()
                .map(|rc| match QoS::from_u8(rc.0) {
                    Some(q) => r3::SubscribeReturnCode::Success(rq(q)),
                    None => r3::SubscribeReturnCode::Failure,
                })
                .collect(),
        },
        Packet::Unsubscribe(u) => r3::Packet::Unsubscribe {
            packet_id: nz(u.packet_id),
            topic_filters: u.filters.clone(),
        },
        Packet::UnsubAck(u) => r3::Packet::UnsubscribeAck {
            packet_id: nz(u.packet_id),
        },
        Packet::PingReq => r3::Packet::PingRequest,
        Packet::PingResp => r3::Packet::PingResponse,
        Packet::Disconnect(_) => r3::Packet::Disconnect,
        Packet::Auth(_) => unreachable!("no AUTH in 3.1.1"),
    }
}

fn from_r3(p: r3::Packet) -> Packet {
    use r3::Packet as P;
    match p {
        P::Connect(c) => Packet::Connect(Box::new(Connect {
            protocol: match c.protocol.level() {
                3 => ProtocolVersion::V3_1,
                _ => ProtocolVersion::V3_1_1,
            },
            clean_start: c.clean_session,
            keep_alive: c.keep_alive,
            client_id: c.client_id,
            will: c.last_will.map(|w| LastWill {
                topic: w.topic,
                payload: w.message,
                qos: oq(w.qos),
                retain: w.retain,
                properties: Default::default(),
            }),
            username: c.username,
            password: c.password,
            properties: Default::default(),
        })),
        P::ConnectAck(c) => Packet::ConnAck(ConnAck {
            session_present: c.session_present,
            reason_code: ReasonCode([0x00, 0x84, 0x85, 0x88, 0x86, 0x87][c.return_code as usize]),
            properties: Default::default(),
        }),
        P::Publish(p) => Packet::Publish(opublish(*p)),
        P::PublishAck { packet_id } => Packet::PubAck(Ack::new(packet_id.get())),
        P::PublishReceived { packet_id } => Packet::PubRec(Ack::new(packet_id.get())),
        P::PublishRelease { packet_id } => Packet::PubRel(Ack::new(packet_id.get())),
        P::PublishComplete { packet_id } => Packet::PubComp(Ack::new(packet_id.get())),
        P::Subscribe {
            packet_id,
            topic_filters,
        } => Packet::Subscribe(Subscribe {
            packet_id: packet_id.get(),
            filters: topic_filters
                .into_iter()
                .map(|(filter, q)| TopicSubscription {
                    filter,
                    options: SubscriptionOptions {
                        qos: oq(q),
                        ..Default::default()
                    },
                })
                .collect(),
            properties: Default::default(),
        }),
        P::SubscribeAck { packet_id, status } => Packet::SubAck(SubAck {
            packet_id: packet_id.get(),
            reason_codes: status
                .into_iter()
                .map(|s| match s {
                    r3::SubscribeReturnCode::Success(q) => ReasonCode(q as u8),
                    r3::SubscribeReturnCode::Failure => ReasonCode(0x80),
                })
                .collect(),
            properties: Default::default(),
        }),
        P::Unsubscribe {
            packet_id,
            topic_filters,
        } => Packet::Unsubscribe(Unsubscribe {
            packet_id: packet_id.get(),
            filters: topic_filters,
            properties: Default::default(),
        }),
        P::UnsubscribeAck { packet_id } => Packet::UnsubAck(UnsubAck {
            packet_id: packet_id.get(),
            reason_codes: Vec::new(),
            properties: Default::default(),
        }),
        P::PingRequest => Packet::PingReq,
        P::PingResponse => Packet::PingResp,
        P::Disconnect => Packet::Disconnect(Disconnect::default()),
    }
}

fn r5_retain_handling(r: RetainHandling) -> r5::RetainHandling {
    match r {
        RetainHandling::SendAtSubscribe => r5::RetainHandling::AtSubscribe,
        RetainHandling::SendIfNew => r5::RetainHandling::AtSubscribeNew,
        RetainHandling::DoNotSend => r5::RetainHandling::NoAtSubscribe,
    }
}

fn to_r5(p: &Packet) -> r5::Packet {
    use r5::Packet as P;
    fn rc<T: TryFrom<u8>>(rc: ReasonCode) -> T {
        T::try_from(rc.0).ok().expect("prepared reason code")
    }
    match p {
        Packet::Connect(c) => {
            let pr = &c.properties;
            P::Connect(Box::new(r5::Connect {
                clean_start: c.clean_start,
                keep_alive: c.keep_alive,
                session_expiry_interval_secs: pr.session_expiry_interval.unwrap_or(0),
                auth_method: pr.authentication_method.clone(),
                auth_data: pr.authentication_data.clone(),
                request_problem_info: pr.request_problem_information.unwrap_or(true),
                request_response_info: pr.request_response_information.unwrap_or(false),
                receive_max: pr.receive_maximum.map(nz),
                topic_alias_max: pr.topic_alias_maximum.unwrap_or(0),
                user_properties: pr.user_properties.clone(),
                max_packet_size: pr.maximum_packet_size.and_then(NonZeroU32::new),
                last_will: c.will.as_ref().map(|w| r5::LastWill {
                    qos: rq(w.qos),
                    retain: w.retain,
                    topic: w.topic.clone(),
                    message: w.payload.clone(),
                    will_delay_interval_sec: w.properties.will_delay_interval,
                    correlation_data: w.properties.correlation_data.clone(),
                    message_expiry_interval: w
                        .properties
                        .message_expiry_interval
                        .and_then(NonZeroU32::new),
                    content_type: w.properties.content_type.clone(),
                    user_properties: w.properties.user_properties.clone(),
                    is_utf8_payload: w.properties.payload_format_indicator.map(|b| b == 1),
                    response_topic: w.properties.response_topic.clone(),
                }),
                client_id: c.client_id.clone(),
                username: c.username.clone(),
                password: c.password.clone(),
                cert: None,
            }))
        }
        Packet::ConnAck(c) => {
            let pr = &c.properties;
            P::ConnectAck(Box::new(r5::ConnectAck {
                session_present: c.session_present,
                reason_code: rc(c.reason_code),
                session_expiry_interval_secs: pr.session_expiry_interval,
                receive_max: nz(pr.receive_maximum.unwrap_or(u16::MAX)),
                max_qos: rq(pr.maximum_qos.unwrap_or(QoS::ExactlyOnce)),
                max_packet_size: pr.maximum_packet_size,
                assigned_client_id: pr.assigned_client_identifier.clone(),
                topic_alias_max: pr.topic_alias_maximum.unwrap_or(0),
                retain_available: pr.retain_available.unwrap_or(true),
                wildcard_subscription_available: pr.wildcard_subscription_available.unwrap_or(true),
                subscription_identifiers_available: pr
                    .subscription_identifiers_available
                    .unwrap_or(true),
                shared_subscription_available: pr.shared_subscription_available.unwrap_or(true),
                server_keepalive_sec: pr.server_keep_alive,
                response_info: pr.response_information.clone(),
                server_reference: pr.server_reference.clone(),
                auth_method: pr.authentication_method.clone(),
                auth_data: pr.authentication_data.clone(),
                reason_string: pr.reason_string.clone(),
                user_properties: pr.user_properties.clone(),
            }))
        }
        Packet::Publish(p) => P::Publish(Box::new(rpublish(p, true))),
        Packet::PubAck(a) | Packet::PubRec(a) => {
            let ack = r5::PublishAck {
                packet_id: nz(a.packet_id),
                reason_code: rc(a.reason_code),
                properties: a.properties.user_properties.clone(),
                reason_string: a.properties.reason_string.clone(),
            };
            if matches!(p, Packet::PubAck(_)) {
                P::PublishAck(ack)
            } else {
                P::PublishReceived(ack)
            }
        }
        Packet::PubRel(a) | Packet::PubComp(a) => {
            let ack = r5::PublishAck2 {
                packet_id: nz(a.packet_id),
                reason_code: rc(a.reason_code),
                properties: a.properties.user_properties.clone(),
                reason_string: a.properties.reason_string.clone(),
            };
            if matches!(p, Packet::PubRel(_)) {
                P::PublishRelease(ack)
            } else {
                P::PublishComplete(ack)
            }
        }
        Packet::Subscribe(s) => P::Subscribe(r5::Subscribe {
            packet_id: nz(s.packet_id),
            id: s
                .properties
                .subscription_identifier
                .and_then(NonZeroU32::new),
            user_properties: s.properties.user_properties.clone(),
            topic_filters: s
                .filters
                .iter()
                .map(|f| {
                    (
                        f.filter.clone(),
                        r5::SubscriptionOptions {
                            qos: rq(f.options.qos),
                            no_local: f.options.no_local,
                            retain_as_published: f.options.retain_as_published,
                            retain_handling: r5_retain_handling(f.options.retain_handling),
                        },
                    )
                })
                .collect(),
        }),
        Packet::SubAck(s) => P::SubscribeAck(r5::SubscribeAck {
            packet_id: nz(s.packet_id),
            properties: s.properties.user_properties.clone(),
            reason_string: s.properties.reason_string.clone(),
            status: s.reason_codes.iter().map(|&c| rc(c)).collect(),
        }),
        Packet::Unsubscribe(u) => P::Unsubscribe(r5::Unsubscribe {
            packet_id: nz(u.packet_id),
            user_properties: u.properties.user_properties.clone(),
            topic_filters: u.filters.clone(),
        }),
        Packet::UnsubAck(u) => P::UnsubscribeAck(r5::UnsubscribeAck {
            packet_id: nz(u.packet_id),
            properties: u.properties.user_properties.clone(),
            reason_string: u.properties.reason_string.clone(),
            status: u.reason_codes.iter().map(|&c| rc(c)).collect(),
        }),
        Packet::PingReq => P::PingRequest,
        Packet::PingResp => P::PingResponse,
        Packet::Disconnect(d) => P::Disconnect(r5::Disconnect {
            reason_code: rc(d.reason_code),
            session_expiry_interval_secs: d.properties.session_expiry_interval,
            server_reference: d.properties.server_reference.clone(),
            reason_string: d.properties.reason_string.clone(),
            user_properties: d.properties.user_properties.clone(),
        }),
        Packet::Auth(_) => unreachable!("AUTH is not part of the differential set"),
    }
}

fn from_r5(p: r5::Packet) -> Packet {
    use r5::Packet as P;
    let ack_props = |reason_string, user_properties| AckProperties {
        reason_string,
        user_properties,
    };
    let p = match p {
        P::Connect(c) => {
            let c = *c;
            Packet::Connect(Box::new(Connect {
                protocol: ProtocolVersion::V5,
                clean_start: c.clean_start,
                keep_alive: c.keep_alive,
                client_id: c.client_id,
                will: c.last_will.map(|w| LastWill {
                    topic: w.topic,
                    payload: w.message,
                    qos: oq(w.qos),
                    retain: w.retain,
                    properties: WillProperties {
                        will_delay_interval: w.will_delay_interval_sec,
                        payload_format_indicator: w.is_utf8_payload.map(u8::from),
                        message_expiry_interval: w.message_expiry_interval.map(NonZeroU32::get),
                        content_type: w.content_type,
                        response_topic: w.response_topic,
                        correlation_data: w.correlation_data,
                        user_properties: w.user_properties,
                    },
                }),
                username: c.username,
                password: c.password,
                properties: ConnectProperties {
                    session_expiry_interval: Some(c.session_expiry_interval_secs),
                    receive_maximum: c.receive_max.map(NonZeroU16::get),
                    maximum_packet_size: c.max_packet_size.map(NonZeroU32::get),
                    topic_alias_maximum: Some(c.topic_alias_max),
                    request_response_information: Some(c.request_response_info),
                    request_problem_information: Some(c.request_problem_info),
                    user_properties: c.user_properties,
                    authentication_method: c.auth_method,
                    authentication_data: c.auth_data,
                },
            }))
        }
        P::ConnectAck(c) => {
            let c = *c;
            Packet::ConnAck(ConnAck {
                session_present: c.session_present,
                reason_code: ReasonCode(c.reason_code as u8),
                properties: ConnAckProperties {
                    session_expiry_interval: c.session_expiry_interval_secs,
                    receive_maximum: Some(c.receive_max.get()),
                    maximum_qos: Some(oq(c.max_qos)).filter(|q| *q != QoS::ExactlyOnce),
                    retain_available: Some(c.retain_available),
                    maximum_packet_size: c.max_packet_size,
                    assigned_client_identifier: c.assigned_client_id,
                    topic_alias_maximum: Some(c.topic_alias_max),
                    reason_string: c.reason_string,
                    user_properties: c.user_properties,
                    wildcard_subscription_available: Some(c.wildcard_subscription_available),
                    subscription_identifiers_available: Some(c.subscription_identifiers_available),
                    shared_subscription_available: Some(c.shared_subscription_available),
                    server_keep_alive: c.server_keepalive_sec,
                    response_information: c.response_info,
                    server_reference: c.server_reference,
                    authentication_method: c.auth_method,
                    authentication_data: c.auth_data,
                },
            })
        }
        P::Publish(p) => Packet::Publish(opublish(*p)),
        P::PublishAck(a) => Packet::PubAck(Ack {
            packet_id: a.packet_id.get(),
            reason_code: ReasonCode(a.reason_code as u8),
            properties: ack_props(a.reason_string, a.properties),
        }),
        P::PublishReceived(a) => Packet::PubRec(Ack {
            packet_id: a.packet_id.get(),
            reason_code: ReasonCode(a.reason_code as u8),
            properties: ack_props(a.reason_string, a.properties),
        }),
        P::PublishRelease(a) => Packet::PubRel(Ack {
            packet_id: a.packet_id.get(),
            reason_code: ReasonCode(a.reason_code as u8),
            properties: ack_props(a.reason_string, a.properties),
        }),
        P::PublishComplete(a) => Packet::PubComp(Ack {
            packet_id: a.packet_id.get(),
            reason_code: ReasonCode(a.reason_code as u8),
            properties: ack_props(a.reason_string, a.properties),
        }),
        P::Subscribe(s) => Packet::Subscribe(Subscribe {
            packet_id: s.packet_id.get(),
            filters: s
                .topic_filters
                .into_iter()
                .map(|(filter, o)| TopicSubscription {
                    filter,
                    options: SubscriptionOptions {
                        qos: oq(o.qos),
                        no_local: o.no_local,
                        retain_as_published: o.retain_as_published,
                        retain_handling: match o.retain_handling {
                            r5::RetainHandling::AtSubscribe => RetainHandling::SendAtSubscribe,
                            r5::RetainHandling::AtSubscribeNew => RetainHandling::SendIfNew,
                            r5::RetainHandling::NoAtSubscribe => RetainHandling::DoNotSend,
                        },
                    },
                })
                .collect(),
            properties: SubscribeProperties {
                subscription_identifier: s.id.map(NonZeroU32::get),
                user_properties: s.user_properties,
            },
        }),
        P::SubscribeAck(s) => Packet::SubAck(SubAck {
            packet_id: s.packet_id.get(),
            reason_codes: s.status.into_iter().map(|c| ReasonCode(c as u8)).collect(),
            properties: ack_props(s.reason_string, s.properties),
        }),
        P::Unsubscribe(u) => Packet::Unsubscribe(Unsubscribe {
            packet_id: u.packet_id.get(),
            filters: u.topic_filters,
            properties: UnsubscribeProperties {
                user_properties: u.user_properties,
            },
        }),
        P::UnsubscribeAck(u) => Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id.get(),
            reason_codes: u.status.into_iter().map(|c| ReasonCode(c as u8)).collect(),
            properties: ack_props(u.reason_string, u.properties),
        }),
        P::PingRequest => Packet::PingReq,
        P::PingResponse => Packet::PingResp,
        P::Disconnect(d) => Packet::Disconnect(Disconnect {
            reason_code: ReasonCode(d.reason_code as u8),
            properties: DisconnectProperties {
                session_expiry_interval: d.session_expiry_interval_secs,
                reason_string: d.reason_string,
                user_properties: d.user_properties,
                server_reference: d.server_reference,
            },
        }),
        P::Auth(_) => unreachable!("AUTH is not part of the differential set"),
    };
    norm(p)
}

// ---------- the two directions ----------

fn ours_to_wire(p: &Packet, v: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(p, v, &mut buf).unwrap();
    buf
}

fn ours_from_wire(
    mut buf: BytesMut,
    v: ProtocolVersion,
    connect: bool,
) -> Result<Packet, TestCaseError> {
    let mut d = if connect {
        Decoder::new(u32::MAX)
    } else {
        Decoder::with_version(v, u32::MAX)
    };
    let wire = buf.clone();
    let p = d.decode(&mut buf).map_err(|e| {
        TestCaseError::fail(format!(
            "our decoder refused rmqtt's bytes {wire:02x?}: {e}"
        ))
    })?;
    prop_assert!(buf.is_empty(), "our decoder left bytes");
    Ok(norm(p.unwrap()))
}

fn check_v3(p: Packet, v: ProtocolVersion) -> Result<(), TestCaseError> {
    let p = prepare(p, false);
    let connect = matches!(p, Packet::Connect(_));

    // Our bytes, their decoder.
    let mut buf = ours_to_wire(&p, v);
    let wire = buf.clone();
    let mut codec = r3::Codec::new(0);
    let (theirs, _) = codec
        .decode(&mut buf)
        .map_err(|e| TestCaseError::fail(format!("rmqtt refused {wire:02x?}: {e:?}")))?
        .expect("whole packet");
    prop_assert_eq!(
        from_r3(theirs),
        p.clone(),
        "rmqtt read {:02x?} differently",
        &wire[..]
    );

    // Their bytes, our decoder. rmqtt writes an MQTT 3.1 CONNECT as `MQIsdp` with level 4
    // (v3/encode.rs puts MQTT_LEVEL_311 unconditionally); MQTT 3.1 §3.1 "Protocol version"
    // requires level 3 for `MQIsdp`, so that direction is skipped for 3.1.
    if v == ProtocolVersion::V3_1 {
        return Ok(());
    }
    let mut buf = BytesMut::new();
    r3::Codec::new(0).encode(to_r3(&p), &mut buf).unwrap();
    prop_assert_eq!(ours_from_wire(buf, v, connect)?, p);
    Ok(())
}

fn check_v5(p: Packet) -> Result<(), TestCaseError> {
    let p = prepare(p, true);
    let connect = matches!(p, Packet::Connect(_));

    let mut buf = ours_to_wire(&p, ProtocolVersion::V5);
    let wire = buf.clone();
    let mut codec = r5::Codec::new(0, 0);
    let (theirs, _) = codec
        .decode(&mut buf)
        .map_err(|e| TestCaseError::fail(format!("rmqtt refused {wire:02x?}: {e:?}")))?
        .expect("whole packet");
    prop_assert_eq!(
        from_r5(theirs),
        p.clone(),
        "rmqtt read {:02x?} differently",
        &wire[..]
    );

    let mut buf = BytesMut::new();
    r5::Codec::new(0, 0).encode(to_r5(&p), &mut buf).unwrap();
    prop_assert_eq!(ours_from_wire(buf, ProtocolVersion::V5, connect)?, p);
    Ok(())
}

fn v5_packets() -> impl Strategy<Value = Packet> {
    prop_oneof![
        strat::connect(ProtocolVersion::V5),
        strat::connack(true),
        strat::publish(true),
        strat::ack(true).prop_map(Packet::PubAck),
        strat::ack(true).prop_map(Packet::PubRec),
        strat::ack(true).prop_map(Packet::PubRel),
        strat::ack(true).prop_map(Packet::PubComp),
        strat::subscribe(true),
        strat::suback(true),
        strat::unsubscribe(true),
        strat::unsuback(true),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        strat::disconnect(true),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn v3_agrees_with_rmqtt(p in prop_oneof![strat::connect(ProtocolVersion::V3_1_1), strat::packet(ProtocolVersion::V3_1_1)]) {
        check_v3(p, ProtocolVersion::V3_1_1)?;
    }

    #[test]
    fn v3_1_connect_agrees_with_rmqtt(p in strat::connect(ProtocolVersion::V3_1)) {
        check_v3(p, ProtocolVersion::V3_1)?;
    }

    #[test]
    fn v5_agrees_with_rmqtt(p in v5_packets()) {
        check_v5(p)?;
    }
}
