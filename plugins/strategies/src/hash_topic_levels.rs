//! `hash_topic_levels`: affinity by part of the topic, e.g. by device in `devices/{id}/...`, so
//! that every message about one device reaches the same member whatever its last levels.
//!
//! Params, exactly one of:
//! - `levels`: comma-separated 0-based level indexes, e.g. `1` or `1,2`;
//! - `pattern`: a topic pattern whose `{name}` levels form the key, e.g. `devices/{id}/#`.
//!   Other levels are literals that must match, `+` (any one level) or a final `#`.
//!
//! The key is the chosen levels joined by `/`, hashed with xxh3, then placed by rendezvous
//! hashing. A topic that does not match (too few levels, a literal that differs) falls back to
//! rendezvous on the whole topic's hash: it keeps per-topic order, which is the weaker promise
//! the key refines, rather than scattering the topic's messages.
//! Needs the topic, so the host calls `select_full`.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use xxhash_rust::xxh3::Xxh3Default;

use crate::members::MemberTable;
use crate::{params, rendezvous, Member, MemberId, MsgMeta, Needs, Strategy};

/// Deeper than any sane topic; bounds the work a config can ask for.
const MAX_LEVEL: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
enum PatternLevel {
    Literal(String),
    AnyOne,
    Key,
    Rest,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum KeySpec {
    Levels(Vec<usize>),
    Pattern(Vec<PatternLevel>),
}

impl Default for KeySpec {
    fn default() -> Self {
        KeySpec::Levels(Vec::new())
    }
}

#[derive(Clone, Debug, Default)]
pub struct HashTopicLevels {
    members: MemberTable,
    spec: KeySpec,
}

fn parse_levels(value: &str) -> Result<KeySpec, String> {
    let mut levels = Vec::new();
    for part in value.split(',') {
        let part = part.trim();
        let level: usize = part.parse().map_err(|_| {
            format!(
                "param `levels`: expected comma-separated level indexes like `1,2`, got `{value}`"
            )
        })?;
        if level >= MAX_LEVEL {
            return Err(format!(
                "param `levels`: level {level} is beyond the limit of {MAX_LEVEL}"
            ));
        }
        if levels.contains(&level) {
            return Err(format!("param `levels`: level {level} is listed twice"));
        }
        levels.push(level);
    }
    Ok(KeySpec::Levels(levels))
}

fn parse_pattern(value: &str) -> Result<KeySpec, String> {
    let parts: Vec<&str> = value.split('/').collect();
    if parts.len() > MAX_LEVEL {
        return Err(format!("param `pattern`: more than {MAX_LEVEL} levels"));
    }
    let mut out = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let level = match *part {
            "#" if i + 1 == parts.len() => PatternLevel::Rest,
            "#" => {
                return Err(format!(
                    "param `pattern`: `#` must be the last level in `{value}`"
                ))
            }
            "+" => PatternLevel::AnyOne,
            p if p.starts_with('{') && p.ends_with('}') && p.len() > 2 => PatternLevel::Key,
            p if p.contains(['{', '}', '+', '#']) => {
                return Err(format!(
                    "param `pattern`: level `{p}` must be a literal, `+`, `#` or a whole `{{name}}`"
                ))
            }
            p => PatternLevel::Literal(p.to_string()),
        };
        out.push(level);
    }
    if !out.contains(&PatternLevel::Key) {
        return Err(format!(
            "param `pattern`: `{value}` has no `{{name}}` level to hash on"
        ));
    }
    Ok(KeySpec::Pattern(out))
}

impl HashTopicLevels {
    /// The key hash for `topic`, or `None` when the topic does not have the levels asked for.
    /// Streams the levels into the hasher, so the hot path allocates nothing.
    fn key_hash(&self, topic: &str) -> Option<u64> {
        let mut hasher = Xxh3Default::new();
        let mut first = true;
        let mut add = |level: &str| {
            if !first {
                hasher.update(b"/");
            }
            first = false;
            hasher.update(level.as_bytes());
        };
        match &self.spec {
            KeySpec::Levels(levels) => {
                for &want in levels {
                    add(topic.split('/').nth(want)?);
                }
            }
            KeySpec::Pattern(pattern) => {
                let mut topic_levels = topic.split('/');
                for p in pattern {
                    if *p == PatternLevel::Rest {
                        break;
                    }
                    let level = topic_levels.next()?;
                    match p {
                        PatternLevel::Literal(lit) if lit != level => return None,
                        PatternLevel::Key => add(level),
                        _ => {}
                    }
                }
                if pattern.last() != Some(&PatternLevel::Rest) && topic_levels.next().is_some() {
                    return None;
                }
            }
        }
        Some(hasher.digest())
    }
}

impl Strategy for HashTopicLevels {
    fn init(&mut self, _group: &str, params: &[(String, String)]) -> Result<Needs, String> {
        params::check_keys("hash_topic_levels", params, &["levels", "pattern"], &[])?;
        let spec =
            match (
                params::get(params, "levels"),
                params::get(params, "pattern"),
            ) {
                (Some(l), None) => parse_levels(l)?,
                (None, Some(p)) => parse_pattern(p.trim())?,
                (Some(_), Some(_)) => {
                    return Err("params `levels` and `pattern` exclude each other: give one".into())
                }
                (None, None) => return Err(
                    "param `levels` (e.g. `1`) or `pattern` (e.g. `devices/{id}/#`) is required"
                        .into(),
                ),
            };
        *self = Self {
            members: MemberTable::default(),
            spec,
        };
        Ok(Needs::TOPIC)
    }

    forward_membership!();

    /// Without the topic (a host that ignored our needs) the whole-topic hash is the best key.
    fn select(&mut self, meta: &MsgMeta) -> Option<MemberId> {
        rendezvous::pick(meta.topic_hash, self.members.iter())
    }

    fn select_full(
        &mut self,
        topic: &str,
        _publisher: &str,
        _payload: Option<&[u8]>,
        meta: &MsgMeta,
    ) -> Option<MemberId> {
        let key = self.key_hash(topic).unwrap_or(meta.topic_hash);
        rendezvous::pick(key, self.members.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn strategy(pairs: &[(&str, &str)]) -> HashTopicLevels {
        let mut s = HashTopicLevels::default();
        assert_eq!(s.init("g", &p(pairs)), Ok(Needs::TOPIC));
        join_online(&mut s, 1..=8, 10);
        s
    }

    fn pick(s: &mut HashTopicLevels, topic: &str) -> MemberId {
        s.select_full(topic, "", None, &meta(topic, "p")).unwrap()
    }

    #[test]
    fn levels_key_ignores_other_levels() {
        let mut s = strategy(&[("levels", "1")]);
        for dev in 0..50 {
            let a = pick(&mut s, &std::format!("devices/{dev}/temp"));
            assert_eq!(pick(&mut s, &std::format!("devices/{dev}/humidity/raw")), a);
            assert_eq!(pick(&mut s, &std::format!("other/{dev}")), a);
        }
        let distinct: std::collections::BTreeSet<_> = (0..64)
            .map(|d| pick(&mut s, &std::format!("devices/{d}/x")))
            .collect();
        assert!(distinct.len() >= 6);
    }

    #[test]
    fn multiple_levels_form_one_key_same_as_the_joined_bytes() {
        let s = strategy(&[("levels", " 2, 0 ")]);
        assert_eq!(s.key_hash("a/b/c/d"), Some(crate::hash_bytes(b"c/a")));
        assert_eq!(s.key_hash("a/b"), None);
    }

    #[test]
    fn pattern_matches_and_falls_back_to_the_topic() {
        let mut s = strategy(&[("pattern", "devices/{id}/#")]);
        assert_eq!(
            s.key_hash("devices/42/temp"),
            Some(crate::hash_bytes(b"42"))
        );
        assert_eq!(s.key_hash("devices/42"), Some(crate::hash_bytes(b"42")));
        assert_eq!(s.key_hash("sensors/42/temp"), None);
        assert_eq!(s.key_hash("devices"), None);
        // A non-matching topic still has per-topic affinity.
        let t = "sensors/42/temp";
        assert_eq!(
            s.select_full(t, "", None, &meta(t, "a")),
            rendezvous::pick(crate::hash_bytes(t.as_bytes()), s.members.iter())
        );
        let exact = strategy(&[("pattern", "+/{site}/{dev}")]);
        assert_eq!(exact.key_hash("x/s1/d1"), Some(crate::hash_bytes(b"s1/d1")));
        assert_eq!(exact.key_hash("x/s1/d1/extra"), None);
    }

    #[test]
    fn bad_params_are_named() {
        let cases: &[&[(&str, &str)]] = &[
            &[],
            &[("levels", "1"), ("pattern", "a/{b}")],
            &[("levels", "one")],
            &[("levels", "1,1")],
            &[("levels", "99")],
            &[("levels", "")],
            &[("pattern", "a/b")],
            &[("pattern", "a/#/{b}")],
            &[("pattern", "a/x{b}")],
        ];
        for c in cases {
            let err = HashTopicLevels::default().init("g", &p(c)).unwrap_err();
            assert!(
                err.contains("`levels`") || err.contains("`pattern`"),
                "{c:?}: {err}"
            );
        }
    }
}
