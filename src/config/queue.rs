//! The work-queue keys a `[[shared.groups]]` rule and a `[[shared.declared]]` entry share: ack
//! deadline, delivery limit and dead letters, per-key order, and what a group's backlog keeps.
//! They are listed once, in [`with_queue_keys`]; [`QueueConfig`] holds them as written,
//! [`GroupSettings`] as a group applies them.

use std::time::Duration;

use serde::Deserialize;

use super::{Invalid, KeySpec};

/// Hands the work-queue keys, with their documentation, to `$callback` after `$input`, as
/// `queue_keys { name: Type, ... }`. The one list of them: a new key is one line here, its
/// check in [`QueueConfig::validate`], and its effect in [`GroupSettings`] (with how
/// `to_json` shows it).
///
/// A rule and a declared entry take the keys at the top level of their own table. serde's
/// `flatten` could share one struct between them, but not with `deny_unknown_fields`, whose
/// errors name a misspelt key and list the valid ones; so each struct gets the fields written
/// into it from this list instead.
macro_rules! with_queue_keys {
    ($callback:ident! { $($input:tt)* }) => {
        $callback! {
            $($input)*
            queue_keys {
                /// Work-queue setting (off when unset): a QoS 1 copy a connected member has not
                /// acknowledged within this many milliseconds goes to another member.
                ack_timeout_ms: Option<u64>,
                /// Work-queue setting: failed deliveries (disconnect, ack timeout,
                /// PUBACK/PUBREC >= 0x80) after which a message is dead-lettered instead of
                /// retried.
                max_deliveries: Option<u32>,
                /// Work-queue setting: where dead-lettered messages are published; `{group}` and
                /// `{topic}` are replaced. Unset: they are dropped and counted.
                dead_letter_topic: Option<String>,
                /// Work-queue setting: per-key order, `"topic"`, `"publisher"` or
                /// `"topic_levels:PATTERN"`.
                ordered_by: Option<String>,
                /// Work-queue setting: queued messages older than this many seconds are dropped.
                max_age_secs: Option<u64>,
                /// Work-queue setting: the group queue keeps only the newest message per
                /// `ordered_by` key.
                compact: bool,
                /// Work-queue setting: what a full group queue does with a new message.
                overflow: $crate::config::Overflow,
            }
        }
    };
}
pub(super) use with_queue_keys;

macro_rules! queue_config {
    (queue_keys { $( $(#[$doc:meta])* $key:ident: $ty:ty, )* }) => {
        /// A group's work-queue settings, as a `[[shared.groups]]` rule or a `[[shared.declared]]`
        /// entry writes them (the same keys in both).
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct QueueConfig {
            $( $(#[$doc])* pub $key: $ty, )*
        }
    };
}
with_queue_keys!(queue_config! {});

/// What a full group queue does with a new message.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Refuse it (v5 publishers hear PUBACK/PUBREC 0x97).
    #[default]
    RejectNew,
    /// Drop the oldest waiting message to make room.
    DropOldest,
}

impl QueueConfig {
    /// True when no setting is made: the group behaves as a plain shared group.
    pub fn is_default(&self) -> bool {
        *self == QueueConfig::default()
    }

    /// Checks the values; `key` names the entry (`shared.groups[2]`).
    pub(super) fn validate(&self, key: &str) -> Result<(), Invalid> {
        let bad = |field: &str, reason: String| Err(Invalid::new(format!("{key}.{field}"), reason));
        if self.ack_timeout_ms == Some(0) {
            return bad(
                "ack_timeout_ms",
                "must be at least 1 (leave it out for none)".into(),
            );
        }
        if self.max_deliveries == Some(0) {
            return bad(
                "max_deliveries",
                "must be at least 1 (leave it out for no limit)".into(),
            );
        }
        if self.max_age_secs == Some(0) {
            return bad(
                "max_age_secs",
                "must be at least 1 (leave it out for no limit)".into(),
            );
        }
        if let Some(topic) = &self.dead_letter_topic {
            let sample = topic.replace("{group}", "g").replace("{topic}", "t");
            if let Err(e) = crate::topic::validate_topic_name(&sample, usize::MAX) {
                return bad(
                    "dead_letter_topic",
                    format!("{topic:?} is not a topic name: {e}"),
                );
            }
        }
        if let Some(spec) = &self.ordered_by {
            if let Err(reason) = KeySpec::parse(spec) {
                return bad("ordered_by", reason);
            }
        }
        if self.compact && self.ordered_by.is_none() {
            return bad(
                "compact",
                "needs `ordered_by`: it keeps the newest message per key".into(),
            );
        }
        Ok(())
    }
}

/// Settings in force for one group, resolved from its [`QueueConfig`]; all off by default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupSettings {
    pub ack_timeout: Option<Duration>,
    pub max_deliveries: Option<u32>,
    /// Template with `{group}` and `{topic}`.
    pub dead_letter_topic: Option<String>,
    pub ordered_by: Option<KeySpec>,
    pub max_age: Option<Duration>,
    pub compact: bool,
    pub overflow: Overflow,
}

impl GroupSettings {
    /// From validated config (an invalid spec, which validation refuses, is left off).
    pub fn from_config(config: &QueueConfig) -> GroupSettings {
        GroupSettings {
            ack_timeout: config.ack_timeout_ms.map(Duration::from_millis),
            max_deliveries: config.max_deliveries,
            dead_letter_topic: config.dead_letter_topic.clone(),
            ordered_by: config
                .ordered_by
                .as_deref()
                .and_then(|s| KeySpec::parse(s).ok()),
            max_age: config.max_age_secs.map(Duration::from_secs),
            compact: config.compact,
            overflow: config.overflow,
        }
    }

    /// The ordering key of a message published on `topic` by `publisher` (its client id),
    /// when the group has `ordered_by`.
    pub fn key_of(&self, topic: &str, publisher: Option<&str>) -> Option<u64> {
        let spec = self.ordered_by.as_ref()?;
        Some(spec.key(topic, publisher))
    }

    /// The dead-letter topic for a message of `group` published on `topic`.
    pub fn dead_letter_topic_for(&self, group: &str, topic: &str) -> Option<String> {
        self.dead_letter_topic
            .as_ref()
            .map(|t| t.replace("{group}", group).replace("{topic}", topic))
    }

    /// The settings as `$SYS` and the admin API show them: only those that are set.
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        if let Some(t) = self.ack_timeout {
            out.insert("ack_timeout_ms".into(), (t.as_millis() as u64).into());
        }
        if let Some(n) = self.max_deliveries {
            out.insert("max_deliveries".into(), n.into());
        }
        if let Some(t) = &self.dead_letter_topic {
            out.insert("dead_letter_topic".into(), t.clone().into());
        }
        if let Some(k) = &self.ordered_by {
            out.insert("ordered_by".into(), k.spec.clone().into());
        }
        if let Some(a) = self.max_age {
            out.insert("max_age_secs".into(), a.as_secs().into());
        }
        if self.compact {
            out.insert("compact".into(), true.into());
        }
        if self.overflow == Overflow::DropOldest {
            out.insert("overflow".into(), "drop_oldest".into());
        }
        serde_json::Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn a_rule_may_set_only_work_queue_settings_and_bad_ones_are_named() {
        let config = Config::from_toml(
            "[[shared.groups]]\nname = \"jobs\"\nack_timeout_ms = 500\nordered_by = \"topic_levels:d/{id}/#\"\noverflow = \"drop_oldest\"\n",
            "test",
        )
        .unwrap();
        let queue = config.shared.groups[0].queue_config();
        assert_eq!(queue.ack_timeout_ms, Some(500));
        assert_eq!(queue.overflow, Overflow::DropOldest);
        let err = Config::from_toml("[[shared.groups]]\nname = \"jobs\"\n", "test").unwrap_err();
        assert!(err.to_string().contains("needs `strategy`"), "{err}");
        for (toml, key) in [
            ("ordered_by = \"device\"", "shared.groups[0].ordered_by"),
            ("compact = true", "shared.groups[0].compact"),
            ("ack_timeout_ms = 0", "shared.groups[0].ack_timeout_ms"),
            (
                "dead_letter_topic = \"dlq/#\"",
                "shared.groups[0].dead_letter_topic",
            ),
        ] {
            let text = format!("[[shared.groups]]\nname = \"jobs\"\n{toml}\n");
            let err = Config::from_toml(&text, "test").unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        let err = Config::from_toml(
            "[[shared.declared]]\nname = \"j\"\nfilter = \"j\"\nmax_age_secs = 0\n",
            "test",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("shared.declared[0].max_age_secs"), "{err}");
    }

    #[test]
    fn dead_letter_topics_are_filled_in() {
        let settings = GroupSettings {
            dead_letter_topic: Some("dlq/{group}/{topic}".into()),
            ..GroupSettings::default()
        };
        assert_eq!(
            settings
                .dead_letter_topic_for("jobs", "jobs/resize")
                .as_deref(),
            Some("dlq/jobs/jobs/resize")
        );
    }
}
