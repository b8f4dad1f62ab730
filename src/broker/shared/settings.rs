//! A group's work-queue settings, resolved from its `[[shared.groups]]` rule or its
//! `[[shared.declared]]` entry: ack deadline, delivery limit and dead letters, per-key order,
//! and what its backlog keeps.

use std::time::Duration;

use crate::config::{Overflow, QueueConfig};

/// Settings in force for one group; all off by default.
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

    /// A message's ordering key, when the group has `ordered_by`.
    pub fn key_of(&self, message: &crate::broker::message::Message) -> Option<u64> {
        let spec = self.ordered_by.as_ref()?;
        Some(spec.key(&message.topic, message.publisher_client_id.as_deref()))
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

/// What a message's ordering key is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// As written in the config, for display.
    pub spec: String,
    kind: KeyKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyKind {
    Topic,
    Publisher,
    /// `topic_levels:PATTERN`, as `hash_topic_levels` reads a pattern.
    Pattern(Vec<Level>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    AnyOne,
    Key,
    Rest,
}

/// Deeper than any sane topic; bounds the work a config can ask for.
const MAX_LEVELS: usize = 64;

impl KeySpec {
    pub fn parse(spec: &str) -> Result<KeySpec, String> {
        let kind = match spec {
            "topic" => KeyKind::Topic,
            "publisher" => KeyKind::Publisher,
            other => {
                let Some(pattern) = other.strip_prefix("topic_levels:") else {
                    return Err(format!(
                        "{other:?}: expected \"topic\", \"publisher\" or \"topic_levels:PATTERN\" (e.g. \"topic_levels:devices/{{id}}/#\")"
                    ));
                };
                KeyKind::Pattern(parse_pattern(pattern)?)
            }
        };
        Ok(KeySpec {
            spec: spec.to_owned(),
            kind,
        })
    }

    /// The key of a message: xxh3 of what the spec picks. A topic that does not match the
    /// pattern is keyed by its whole topic (per-topic order, the weaker promise).
    pub fn key(&self, topic: &str, publisher: Option<&str>) -> u64 {
        match &self.kind {
            KeyKind::Topic => crate::strategy::key_hash(topic.as_bytes()),
            KeyKind::Publisher => crate::strategy::key_hash(publisher.unwrap_or("").as_bytes()),
            KeyKind::Pattern(levels) => pattern_key(levels, topic)
                .unwrap_or_else(|| crate::strategy::key_hash(topic.as_bytes())),
        }
    }
}

fn parse_pattern(pattern: &str) -> Result<Vec<Level>, String> {
    let parts: Vec<&str> = pattern.split('/').collect();
    if parts.len() > MAX_LEVELS {
        return Err(format!(
            "pattern {pattern:?}: more than {MAX_LEVELS} levels"
        ));
    }
    let mut out = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        out.push(match *part {
            "#" if i + 1 == parts.len() => Level::Rest,
            "#" => return Err(format!("pattern {pattern:?}: `#` must be the last level")),
            "+" => Level::AnyOne,
            p if p.starts_with('{') && p.ends_with('}') && p.len() > 2 => Level::Key,
            p if p.contains(['{', '}', '+', '#']) => {
                return Err(format!(
                    "pattern {pattern:?}: level `{p}` must be a literal, `+`, `#` or a whole `{{name}}`"
                ))
            }
            p => Level::Literal(p.to_owned()),
        });
    }
    if !out.contains(&Level::Key) {
        return Err(format!(
            "pattern {pattern:?} has no `{{name}}` level to key on"
        ));
    }
    Ok(out)
}

fn pattern_key(pattern: &[Level], topic: &str) -> Option<u64> {
    let mut key = String::new();
    let mut levels = topic.split('/');
    for p in pattern {
        if *p == Level::Rest {
            break;
        }
        let level = levels.next()?;
        match p {
            Level::Literal(lit) if lit != level => return None,
            Level::Key => {
                if !key.is_empty() {
                    key.push('/');
                }
                key.push_str(level);
            }
            _ => {}
        }
    }
    if pattern.last() != Some(&Level::Rest) && levels.next().is_some() {
        return None;
    }
    Some(crate::strategy::key_hash(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_spec() {
        let topic = KeySpec::parse("topic").unwrap();
        assert_eq!(topic.key("a/b", Some("p")), topic.key("a/b", Some("q")));
        assert_ne!(topic.key("a/b", None), topic.key("a/c", None));
        let publisher = KeySpec::parse("publisher").unwrap();
        assert_eq!(
            publisher.key("a/b", Some("p")),
            publisher.key("x", Some("p"))
        );
        let device = KeySpec::parse("topic_levels:devices/{id}/#").unwrap();
        assert_eq!(
            device.key("devices/7/temp", None),
            device.key("devices/7/rpm/x", None)
        );
        assert_ne!(
            device.key("devices/7/temp", None),
            device.key("devices/8/temp", None)
        );
        // Not matching: keyed by the whole topic.
        assert_eq!(device.key("other/7", None), topic.key("other/7", None));
    }

    #[test]
    fn bad_specs_say_why() {
        assert!(KeySpec::parse("device")
            .unwrap_err()
            .contains("topic_levels:"));
        assert!(KeySpec::parse("topic_levels:a/#/b")
            .unwrap_err()
            .contains("last level"));
        assert!(KeySpec::parse("topic_levels:a/b")
            .unwrap_err()
            .contains("{name}"));
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
