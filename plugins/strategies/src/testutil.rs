//! Helpers shared by the unit tests.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::{Member, MemberId, MsgMeta, Strategy};

pub fn member(id: MemberId) -> Member {
    Member {
        id,
        client_id: format!("client-{id}"),
        weight: 1,
        subscribed_at_ms: 1_000 + id,
    }
}

pub fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (String::from(*k), String::from(*v)))
        .collect()
}

/// Joins members `ids` and reports each online with `capacity` room.
pub fn join_online(s: &mut dyn Strategy, ids: impl IntoIterator<Item = MemberId>, capacity: u32) {
    for id in ids {
        s.member_joined(member(id));
        s.member_load(id, 0, capacity, true);
    }
}

pub fn meta(topic: &str, publisher: &str) -> MsgMeta {
    MsgMeta {
        topic_hash: crate::hash_bytes(topic.as_bytes()),
        publisher_hash: crate::hash_bytes(publisher.as_bytes()),
        qos: 1,
        retain: false,
        payload_len: 0,
        key_hash: crate::hash_bytes(topic.as_bytes()),
    }
}

/// Picks `n` times with `meta` and counts the answers per member id (index = id).
pub fn histogram(s: &mut dyn Strategy, n: usize, max_id: usize, meta: &MsgMeta) -> Vec<usize> {
    let mut h = alloc::vec![0usize; max_id + 1];
    for _ in 0..n {
        let id = s.select(meta).expect("a member");
        h[id as usize] += 1;
    }
    h
}
