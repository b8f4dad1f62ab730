//! `ordered_by`: what a message's ordering key is made of (`topic`, `publisher` or
//! `topic_levels:PATTERN`), parsed once from the config, and the key of a topic under it.

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
            KeyKind::Topic => crate::topic::key_hash(topic.as_bytes()),
            KeyKind::Publisher => crate::topic::key_hash(publisher.unwrap_or("").as_bytes()),
            KeyKind::Pattern(levels) => pattern_key(levels, topic)
                .unwrap_or_else(|| crate::topic::key_hash(topic.as_bytes())),
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
    Some(crate::topic::key_hash(key.as_bytes()))
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
}
