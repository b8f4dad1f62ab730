//! How topic filters relate: whether a rule matches a topic, covers a filter, or meets one.

use super::Access;
use crate::topic::filter_matches;

/// A matching `deny` rule refuses; otherwise a matching rule that `grants` allows.
pub(super) fn decide_over<S: AsRef<str>>(
    rules: impl IntoIterator<Item = (Access, S)>,
    topic: &str,
    grants: fn(Access) -> bool,
) -> bool {
    let mut granted = false;
    for (access, filter) in rules {
        if !filter_matches(filter.as_ref(), topic) {
            continue;
        }
        if access == Access::Deny {
            return false;
        }
        granted |= grants(access);
    }
    granted
}

/// A leading wildcard never reaches `$` topics [MQTT-4.7.2-1].
fn dollar_guard(rule: &str, filter: &str) -> bool {
    filter.starts_with('$') && (rule.starts_with('+') || rule.starts_with('#'))
}

/// Whether every topic `filter` can match is matched by `rule`.
pub fn covers(rule: &str, filter: &str) -> bool {
    if dollar_guard(rule, filter) {
        return false;
    }
    let mut rule_levels = rule.split('/');
    let mut levels = filter.split('/');
    loop {
        match (rule_levels.next(), levels.next()) {
            (Some("#"), _) => return true,
            (Some(_), Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(r), Some(f)) => {
                if r != f {
                    return false;
                }
            }
            (None, None) => return true,
            // A `#` left in the rule was taken by the first arm (`a/#` covers `a`).
            (Some(_), None) | (None, Some(_)) => return false,
        }
    }
}

/// Whether some topic is matched by both `a` and `b`.
pub fn intersects(a: &str, b: &str) -> bool {
    if dollar_guard(a, b) || dollar_guard(b, a) {
        return false;
    }
    let mut left = a.split('/');
    let mut right = b.split('/');
    loop {
        match (left.next(), right.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(l), Some(r)) => {
                if l != r {
                    return false;
                }
            }
            (None, None) => return true,
            (Some(rest), None) | (None, Some(rest)) => {
                return rest == "#";
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{filter, topic};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn covers_and_intersects_examples() {
        assert!(covers("a/#", "a"));
        assert!(covers("a/#", "a/+/c"));
        assert!(covers("+/b", "x/b"));
        assert!(!covers("+/b", "#"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("#", "$SYS/x"));
        assert!(intersects("a/+", "+/b"));
        assert!(intersects("a/#", "a"));
        assert!(!intersects("a/b", "a/c"));
        assert!(!intersects("a/b", "a/b/c"));
        assert!(!intersects("#", "$SYS/#"));
    }

    proptest! {
        /// `covers` and `intersects` agree with matching actual topics.
        #[test]
        fn filter_relations_agree_with_topics(r in filter(), f in filter(), topics in proptest::collection::vec(topic(), 1..40)) {
            for t in &topics {
                if covers(&r, &f) && filter_matches(&f, t) {
                    prop_assert!(filter_matches(&r, t), "{r} covers {f} but not {t}");
                }
                if filter_matches(&r, t) && filter_matches(&f, t) {
                    prop_assert!(intersects(&r, &f), "{r} and {f} both match {t}");
                }
            }
        }
    }
}
