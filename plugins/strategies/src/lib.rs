//! sharq's built-in shared-subscription dispatch strategies.
//!
//! This crate holds all the logic and knows nothing of WebAssembly: the guest crates in
//! `plugins/<name>/` wrap one strategy each behind the `sharq:dispatch/select-member` WIT
//! interface, and the broker links the same code natively as its fallback and as the baseline
//! for Wasm-vs-native benchmarks. Keeping one implementation means the fallback and the plugin
//! cannot disagree about where a key goes.
//!
//! The [`Strategy`] trait mirrors the WIT calls one to one; see `wit/sharq-dispatch.wit` for
//! the contract (call order, determinism, what an answer of `None` means).
#![no_std]

extern crate alloc;
#[cfg(test)]
extern crate std;

use alloc::boxed::Box;
use alloc::string::String;

/// The three membership calls of a strategy whose state is a `members: MemberTable` field and
/// that needs nothing more than the table's bookkeeping on join, leave and load.
macro_rules! forward_membership {
    () => {
        fn member_joined(&mut self, member: Member) {
            self.members.join(&member, member.weight);
        }

        fn member_left(&mut self, id: MemberId) {
            self.members.leave(id);
        }

        fn member_load(&mut self, id: MemberId, inflight: u32, capacity: u32, online: bool) {
            self.members.load(id, inflight, capacity, online);
        }
    };
}

pub mod members;
mod params;
pub mod rendezvous;
pub mod rng;

pub mod failover;
pub mod hash_clientid;
pub mod hash_topic;
pub mod hash_topic_levels;
pub mod least_inflight;
pub mod random;
pub mod round_robin;
pub mod round_robin_per_publisher;
pub mod sticky;
pub mod weighted;

#[cfg(test)]
mod testutil;

/// A member's id, assigned by the broker; never reused within one broker process.
pub type MemberId = u64;

/// Mirror of the WIT `member` record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: MemberId,
    /// The MQTT client identifier of the member's session.
    pub client_id: String,
    /// Relative weight; 1 when neither the config nor the subscriber said.
    pub weight: u32,
    /// Milliseconds since the Unix epoch; orders members for active/standby.
    pub subscribed_at_ms: u64,
}

/// Mirror of the WIT `msg-meta` record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MsgMeta {
    /// xxh3-64 (seed 0) of the topic name's bytes.
    pub topic_hash: u64,
    /// xxh3-64 (seed 0) of the publisher's client id; 0 for broker-internal messages.
    pub publisher_hash: u64,
    pub qos: u8,
    pub retain: bool,
    pub payload_len: u32,
    /// xxh3-64 of the message's ordering key (the group's `ordered_by`), else the topic hash.
    /// Contract 0.2.0; a 0.1.0 host has no such field and the glue copies the topic hash.
    pub key_hash: u64,
}

/// Mirror of the WIT `needs` flags: what `select_full` wants from the host. Combine them with
/// `|`: `Needs::TOPIC | Needs::USER_PROPERTIES`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Needs {
    pub topic: bool,
    pub publisher: bool,
    pub payload: bool,
    /// Contract 0.2.0: the PUBLISH's user properties.
    pub user_properties: bool,
    /// Contract 0.2.0: the PUBLISH's content type.
    pub content_type: bool,
}

impl Needs {
    /// `select` alone suffices.
    pub const NONE: Needs = Needs {
        topic: false,
        publisher: false,
        payload: false,
        user_properties: false,
        content_type: false,
    };
    pub const TOPIC: Needs = Needs {
        topic: true,
        ..Needs::NONE
    };
    pub const PUBLISHER: Needs = Needs {
        publisher: true,
        ..Needs::NONE
    };
    pub const PAYLOAD: Needs = Needs {
        payload: true,
        ..Needs::NONE
    };
    pub const USER_PROPERTIES: Needs = Needs {
        user_properties: true,
        ..Needs::NONE
    };
    pub const CONTENT_TYPE: Needs = Needs {
        content_type: true,
        ..Needs::NONE
    };

    pub fn is_empty(&self) -> bool {
        *self == Needs::NONE
    }
}

impl core::ops::BitOr for Needs {
    type Output = Needs;

    fn bitor(self, other: Needs) -> Needs {
        Needs {
            topic: self.topic || other.topic,
            publisher: self.publisher || other.publisher,
            payload: self.payload || other.payload,
            user_properties: self.user_properties || other.user_properties,
            content_type: self.content_type || other.content_type,
        }
    }
}

/// One dispatch strategy instance, serving one shared-subscription group.
///
/// The methods mirror the WIT interface; the host calls `init` first, then pushes membership
/// and load changes as they happen, and calls `select` (or `select_full` when `init` asked for
/// more than the metadata) once per message. `None` leaves the choice to the host's round robin;
/// strategies here return `None` only when no member is online (the host then queues the
/// message for the group) or when a configuration leaves nobody eligible.
pub trait Strategy {
    /// Configure a fresh instance. Calling it again resets the instance, as the host does
    /// when it rebuilds one. An `Err` names the offending param.
    fn init(&mut self, group: &str, params: &[(String, String)]) -> Result<Needs, String>;
    fn member_joined(&mut self, member: Member);
    fn member_left(&mut self, id: MemberId);
    fn member_load(&mut self, id: MemberId, inflight: u32, capacity: u32, online: bool);
    fn select(&mut self, meta: &MsgMeta) -> Option<MemberId>;
    /// The host calls this instead of `select` when `init` returned non-empty [`Needs`];
    /// fields not asked for arrive empty.
    fn select_full(
        &mut self,
        topic: &str,
        publisher: &str,
        payload: Option<&[u8]>,
        meta: &MsgMeta,
    ) -> Option<MemberId> {
        let _ = (topic, publisher, payload);
        self.select(meta)
    }
}

/// xxh3-64 with seed 0, the hash the host uses for `topic-hash` and `publisher-hash`.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Names of the built-in strategies, as used in the config's `strategy = "..."` and as the
/// stems of the built-in plugin files. `plugins/builtins.rs` is the one list; the broker's
/// build embeds the components it names.
pub const BUILTIN_NAMES: &[&str] = &include!("../../builtins.rs");

/// A fresh, un-initialised instance of the built-in strategy `name`, for the native path.
pub fn builtin(name: &str) -> Option<Box<dyn Strategy + Send>> {
    Some(match name {
        "random" => Box::new(random::Random::default()),
        "round_robin" => Box::new(round_robin::RoundRobin::default()),
        "round_robin_per_publisher" => {
            Box::new(round_robin_per_publisher::RoundRobinPerPublisher::default())
        }
        "sticky" => Box::new(sticky::Sticky::default()),
        "hash_clientid" => Box::new(hash_clientid::HashClientId::default()),
        "hash_topic" => Box::new(hash_topic::HashTopic::default()),
        "hash_topic_levels" => Box::new(hash_topic_levels::HashTopicLevels::default()),
        "least_inflight" => Box::new(least_inflight::LeastInflight::default()),
        "weighted" => Box::new(weighted::Weighted::default()),
        "failover" => Box::new(failover::Failover::default()),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_name_constructs_and_inits_with_no_params() {
        for name in BUILTIN_NAMES {
            let mut s = builtin(name).unwrap();
            let r = s.init("g", &[]);
            if *name == "hash_topic_levels" {
                // It has nothing sensible to hash without `levels` or `pattern`.
                assert!(r.is_err(), "{name}");
            } else {
                assert!(r.is_ok(), "{name}: {r:?}");
            }
        }
        assert!(builtin("nope").is_none());
    }

    #[test]
    fn unknown_params_are_refused_by_name() {
        for name in BUILTIN_NAMES {
            let mut s = builtin(name).unwrap();
            let err = s
                .init("g", &[("bogus".into(), "1".into())])
                .expect_err(name);
            assert!(err.contains("`bogus`"), "{name}: {err}");
        }
    }

    /// `plugins/builtins.rs` and the workspace members must agree: a strategy missing from the
    /// members cannot be built, and a strategy member missing from the list would be built
    /// but never embedded. The root `build.rs` refuses the same mismatch.
    #[test]
    fn every_builtin_is_a_workspace_member_and_every_strategy_member_a_builtin() {
        use alloc::vec::Vec;
        const SUPPORT_CRATES: &[&str] = &["strategies", "sdk"];
        let manifest = include_str!("../../Cargo.toml");
        let members_start = manifest.find("members = [").expect("a members list");
        let members_end = members_start + manifest[members_start..].find(']').expect("its end");
        let mut members: Vec<&str> = manifest[members_start..members_end]
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|member| !SUPPORT_CRATES.contains(member))
            .collect();
        members.sort_unstable();
        let mut builtins = BUILTIN_NAMES.to_vec();
        builtins.sort_unstable();
        assert_eq!(
            members, builtins,
            "plugins/Cargo.toml members vs plugins/builtins.rs"
        );
    }

    #[test]
    fn hash_matches_xxh3_reference() {
        // Published XXH3_64bits test vector for the empty input.
        assert_eq!(hash_bytes(b""), 0x2D06_8005_38D3_94C2);
    }
}
