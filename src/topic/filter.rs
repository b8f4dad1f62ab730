//! Validation of PUBLISH topic names and plain SUBSCRIBE topic filters (MQTT 5.0 §4.7).
//!
//! Both checks are a single pass over the bytes without allocating: they run on every PUBLISH
//! and SUBSCRIBE. UTF-8 well-formedness and U+0000 are the codec's job and are not rechecked.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("invalid topic filter: {0}")]
    InvalidFilter(&'static str),
    #[error("invalid topic name: {0}")]
    InvalidName(&'static str),
    #[error("invalid shared subscription: {0}")]
    InvalidShare(&'static str),
    #[error("too many topic levels: {levels} > {max}")]
    TooManyLevels { levels: usize, max: usize },
}

/// A PUBLISH topic name: non-empty, no `+` or `#`, at most `max_levels` levels.
pub fn validate_topic_name(name: &str, max_levels: usize) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::InvalidName("empty"));
    }
    let mut levels = 1;
    for b in name.bytes() {
        match b {
            b'/' => levels += 1,
            // [MQTT-3.3.2-2]: wildcards are for filters only.
            b'+' | b'#' => return Err(TopicError::InvalidName("wildcard in topic name")),
            _ => {}
        }
    }
    check_levels(levels, max_levels)
}

/// A plain topic filter: non-empty, `#` only last and alone in its level, `+` alone in its level.
pub fn validate_filter(filter: &str, max_levels: usize) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::InvalidFilter("empty"));
    }
    let bytes = filter.as_bytes();
    let mut levels = 1;
    let mut level_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'/' => {
                levels += 1;
                level_start = i + 1;
            }
            // [MQTT-4.7.1-2]: `+` must occupy an entire level.
            b'+' => {
                let ends_level = bytes.get(i + 1).is_none_or(|&c| c == b'/');
                if i != level_start || !ends_level {
                    return Err(TopicError::InvalidFilter("'+' must occupy a whole level"));
                }
            }
            // [MQTT-4.7.1-1]: `#` must be the whole last level.
            b'#' if i != level_start || i + 1 != bytes.len() => {
                return Err(TopicError::InvalidFilter(
                    "'#' must be the whole last level",
                ));
            }
            _ => {}
        }
    }
    check_levels(levels, max_levels)
}

fn check_levels(levels: usize, max: usize) -> Result<(), TopicError> {
    if levels > max {
        Err(TopicError::TooManyLevels { levels, max })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 16;

    #[test]
    fn topic_names() {
        for ok in [
            "a",
            "a/b",
            "/",
            "//",
            "/a",
            "a/",
            "$SYS/x",
            "a b/ü",
            "$share/g/x",
        ] {
            assert_eq!(validate_topic_name(ok, MAX), Ok(()), "{ok:?}");
        }
        for bad in ["", "+", "#", "a/+", "a/#", "a+", "a#b"] {
            assert!(
                matches!(
                    validate_topic_name(bad, MAX),
                    Err(TopicError::InvalidName(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn topic_name_levels() {
        assert_eq!(validate_topic_name("a/b/c", 3), Ok(()));
        assert_eq!(
            validate_topic_name("a/b/c/", 3),
            Err(TopicError::TooManyLevels { levels: 4, max: 3 })
        );
        assert_eq!(
            validate_topic_name("//", 2),
            Err(TopicError::TooManyLevels { levels: 3, max: 2 })
        );
    }

    #[test]
    fn valid_filters() {
        for ok in [
            "#",
            "+",
            "/",
            "//",
            "+/+",
            "$SYS/#",
            "a/#",
            "a/+/b",
            "+/#",
            "/+",
            "+/",
            "a//b",
            "$sharex/g/x",
        ] {
            assert_eq!(validate_filter(ok, MAX), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn invalid_filters() {
        for bad in [
            "", "a/#/b", "a#", "#a", "a/b+", "+a", "a/+b/c", "##", "++", "#/", "#/#", "a/b#",
        ] {
            assert!(
                matches!(validate_filter(bad, MAX), Err(TopicError::InvalidFilter(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn filter_levels() {
        assert_eq!(validate_filter("+/+/#", 3), Ok(()));
        assert_eq!(
            validate_filter("+/+/+/#", 3),
            Err(TopicError::TooManyLevels { levels: 4, max: 3 })
        );
    }
}

/// Whether topic name `topic` matches topic filter `filter` (both already validated).
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    // A leading wildcard does not match `$` topics [MQTT-4.7.2-1].
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for filter_level in filter.split('/') {
        match filter_level {
            "#" => return true,
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            literal => {
                if topic_levels.next() != Some(literal) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

#[cfg(test)]
mod matching_tests {
    use super::filter_matches;

    #[test]
    fn matching_rules() {
        assert!(filter_matches("a/#", "a"));
        assert!(filter_matches("a/#", "a/b/c"));
        assert!(filter_matches("a/+/c", "a/b/c"));
        assert!(filter_matches("a/+", "a/"));
        assert!(!filter_matches("a/+", "a"));
        assert!(!filter_matches("a/b", "a/b/c"));
        assert!(filter_matches("#", "a/b"));
        assert!(!filter_matches("#", "$SYS/x"));
        assert!(!filter_matches("+/x", "$SYS/x"));
        assert!(filter_matches("$SYS/#", "$SYS/x"));
    }
}
