//! Shared-subscription syntax: `$share/{group}/{filter}` (MQTT 5.0 §4.8.2, accepted over 3.1.1
//! too) and EMQX's group-less `$queue/{filter}`.

use super::filter::{validate_filter, TopicError};

const SHARE_PREFIX: &str = "$share/";
const QUEUE_PREFIX: &str = "$queue/";

/// The group name given to `$queue/{filter}` subscriptions. EMQX defines `$queue/t` as
/// `$share/$queue/t`, so both spellings deliberately land in the same group.
pub const QUEUE_GROUP: &str = "$queue";

/// What a SUBSCRIBE filter string means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionFilter<'a> {
    /// An ordinary filter.
    Plain(&'a str),
    /// `$share/{group}/{filter}`, or `$queue/{filter}` (group is then `$queue`).
    Shared { group: &'a str, filter: &'a str },
}

impl<'a> SubscriptionFilter<'a> {
    /// The filter that is matched against topic names (the part after the group).
    pub fn filter(&self) -> &'a str {
        match *self {
            SubscriptionFilter::Plain(filter) => filter,
            SubscriptionFilter::Shared { filter, .. } => filter,
        }
    }

    /// The share group, if this is a shared subscription.
    pub fn group(&self) -> Option<&'a str> {
        match *self {
            SubscriptionFilter::Plain(_) => None,
            SubscriptionFilter::Shared { group, .. } => Some(group),
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, SubscriptionFilter::Shared { .. })
    }
}

/// Splits and validates a SUBSCRIBE filter, recognising `$share/` and `$queue/`.
///
/// Malformed share syntax is `InvalidShare`; a well-formed share whose inner filter is invalid
/// reports the inner filter's own error (`InvalidFilter` / `TooManyLevels`). Both map to SUBACK
/// 0x8F (v5) / 0x80 (v3.1.1), so the distinction only serves logs.
pub fn parse_subscription(
    filter: &str,
    max_levels: usize,
) -> Result<SubscriptionFilter<'_>, TopicError> {
    if let Some(rest) = filter.strip_prefix(SHARE_PREFIX) {
        let Some((group, inner)) = rest.split_once('/') else {
            return Err(TopicError::InvalidShare("expected $share/{group}/{filter}"));
        };
        // [MQTT-4.8.2-1]: ShareName is at least one character, without `/`, `+` or `#`
        // (`/` is excluded by construction: the group ends at the first one).
        if group.is_empty() {
            return Err(TopicError::InvalidShare("empty share name"));
        }
        if group.contains(['+', '#']) {
            return Err(TopicError::InvalidShare("wildcard in share name"));
        }
        // [MQTT-4.8.2-2]: ShareName is followed by `/` and a topic filter.
        if inner.is_empty() {
            return Err(TopicError::InvalidShare("empty filter after share name"));
        }
        validate_filter(inner, max_levels)?;
        return Ok(SubscriptionFilter::Shared {
            group,
            filter: inner,
        });
    }
    if let Some(inner) = filter.strip_prefix(QUEUE_PREFIX) {
        if inner.is_empty() {
            return Err(TopicError::InvalidShare("empty filter after $queue/"));
        }
        validate_filter(inner, max_levels)?;
        return Ok(SubscriptionFilter::Shared {
            group: QUEUE_GROUP,
            filter: inner,
        });
    }
    // The bare prefixes without their `/` would otherwise pass as plain filters, and a client
    // sending them surely meant a shared subscription.
    if filter == "$share" || filter == "$queue" {
        return Err(TopicError::InvalidShare("missing group and filter"));
    }
    validate_filter(filter, max_levels)?;
    Ok(SubscriptionFilter::Plain(filter))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 16;

    fn shared<'a>(group: &'a str, filter: &'a str) -> SubscriptionFilter<'a> {
        SubscriptionFilter::Shared { group, filter }
    }

    #[test]
    fn invalid_shares() {
        for bad in [
            "$share/a+b/x",
            "$share/+/x",
            "$share/#",
            "$share/g",
            "$share/g/",
            "$share//x",
            "$share/",
            "$share",
            "$share/a#/x",
            "$queue/",
            "$queue",
        ] {
            assert!(
                matches!(
                    parse_subscription(bad, MAX),
                    Err(TopicError::InvalidShare(_))
                ),
                "{bad:?} -> {:?}",
                parse_subscription(bad, MAX)
            );
        }
    }

    #[test]
    fn valid_shares() {
        assert_eq!(parse_subscription("$share/g/#", MAX), Ok(shared("g", "#")));
        assert_eq!(
            parse_subscription("$share/g/+/y", MAX),
            Ok(shared("g", "+/y"))
        );
        assert_eq!(
            parse_subscription("$share/g/a/b", MAX),
            Ok(shared("g", "a/b"))
        );
        assert_eq!(parse_subscription("$share/g//", MAX), Ok(shared("g", "/")));
        assert_eq!(
            parse_subscription("$share/g/$SYS/#", MAX),
            Ok(shared("g", "$SYS/#"))
        );
        assert_eq!(
            parse_subscription("$share/$queue/x", MAX),
            Ok(shared("$queue", "x"))
        );
        assert_eq!(
            parse_subscription("$queue/a/+", MAX),
            Ok(shared(QUEUE_GROUP, "a/+"))
        );
        assert_eq!(
            parse_subscription("$queue/#", MAX),
            Ok(shared(QUEUE_GROUP, "#"))
        );
        assert_eq!(
            parse_subscription("$queue//", MAX),
            Ok(shared(QUEUE_GROUP, "/"))
        );
    }

    #[test]
    fn invalid_inner_filter_keeps_its_error() {
        assert!(matches!(
            parse_subscription("$share/g/a/#/b", MAX),
            Err(TopicError::InvalidFilter(_))
        ));
        assert!(matches!(
            parse_subscription("$queue/a+", MAX),
            Err(TopicError::InvalidFilter(_))
        ));
        assert_eq!(
            parse_subscription("$share/g/a/b/c", 2),
            Err(TopicError::TooManyLevels { levels: 3, max: 2 })
        );
    }

    #[test]
    fn plain_filters() {
        for ok in [
            "$sharex/g/x",
            "$SYS/#",
            "#",
            "+",
            "/",
            "//",
            "+/+",
            "$shar",
            "$queues/x",
            "a/$share/g/x",
        ] {
            assert_eq!(
                parse_subscription(ok, MAX),
                Ok(SubscriptionFilter::Plain(ok)),
                "{ok:?}"
            );
        }
        for bad in ["a/#/b", "a#", "a/b+", "", "$share#", "$queue+"] {
            assert!(
                matches!(
                    parse_subscription(bad, MAX),
                    Err(TopicError::InvalidFilter(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn accessors() {
        let s = shared("g", "a/+");
        assert_eq!(
            (s.group(), s.filter(), s.is_shared()),
            (Some("g"), "a/+", true)
        );
        let p = SubscriptionFilter::Plain("a/#");
        assert_eq!((p.group(), p.filter(), p.is_shared()), (None, "a/#", false));
    }
}
