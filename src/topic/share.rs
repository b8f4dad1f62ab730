//! Shared-subscription syntax: `$share/{group}/{filter}` (MQTT 5.0 §4.8.2, accepted over 3.1.1
//! too), EMQX's group-less `$queue/{filter}`, and, when configured, HiveMQ 3's
//! `$share:{group}:{filter}`.

use std::borrow::Cow;

use super::filter::{validate_filter, TopicError};

const SHARE_PREFIX: &str = "$share/";
const QUEUE_PREFIX: &str = "$queue/";
const LEGACY_SHARE_PREFIX: &str = "$share:";

/// Spellings of a shared subscription recognised beyond the standard ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShareSyntax {
    /// HiveMQ 3's `$share:{group}:{filter}`, read as `$share/{group}/{filter}`. Off by
    /// default because standard MQTT makes it an ordinary filter.
    pub legacy_colon: bool,
}

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
    parse_subscription_with(filter, max_levels, ShareSyntax::default())
}

/// [`parse_subscription`], also recognising the spellings `syntax` enables.
pub fn parse_subscription_with(
    filter: &str,
    max_levels: usize,
    syntax: ShareSyntax,
) -> Result<SubscriptionFilter<'_>, TopicError> {
    if let Some(rest) = filter.strip_prefix(SHARE_PREFIX) {
        let Some((group, inner)) = rest.split_once('/') else {
            return Err(TopicError::InvalidShare("expected $share/{group}/{filter}"));
        };
        return validate_share(group, inner, max_levels);
    }
    if syntax.legacy_colon {
        if let Some(rest) = filter.strip_prefix(LEGACY_SHARE_PREFIX) {
            // The group ends at the first `:`; the filter may contain more of them.
            let Some((group, inner)) = rest.split_once(':') else {
                return Err(TopicError::InvalidShare("expected $share:{group}:{filter}"));
            };
            // Its standard spelling would split a `/` in the group differently.
            if group.contains('/') {
                return Err(TopicError::InvalidShare("'/' in share name"));
            }
            return validate_share(group, inner, max_levels);
        }
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

/// A share name on its own, as a group declared in the configuration or by an admin names it:
/// [MQTT-4.8.2-1] at least one character, without `/`, `+` or `#`.
pub fn validate_share_name(group: &str) -> Result<(), TopicError> {
    if group.is_empty() {
        return Err(TopicError::InvalidShare("empty share name"));
    }
    if group.contains(['+', '#']) {
        return Err(TopicError::InvalidShare("wildcard in share name"));
    }
    // Subscription parsing splits the name off at its first `/`, so there it cannot occur; a
    // name given on its own must be refused explicitly, or no subscription could reach it.
    if group.contains('/') {
        return Err(TopicError::InvalidShare("'/' in share name"));
    }
    Ok(())
}

/// Validates a share name and the filter that follows it.
fn validate_share<'a>(
    group: &'a str,
    inner: &'a str,
    max_levels: usize,
) -> Result<SubscriptionFilter<'a>, TopicError> {
    validate_share_name(group)?;
    // [MQTT-4.8.2-2]: ShareName is followed by `/` and a topic filter.
    if inner.is_empty() {
        return Err(TopicError::InvalidShare("empty filter after share name"));
    }
    validate_filter(inner, max_levels)?;
    Ok(SubscriptionFilter::Shared {
        group,
        filter: inner,
    })
}

/// The name a session keeps the subscription `requested` (parsed as `parsed`) under: the
/// legacy colon spelling becomes `$share/{group}/{filter}`, so that both spellings are one
/// subscription (either UNSUBSCRIBE removes it, either SUBSCRIBE replaces it) and a stored
/// session restores as the same group whatever the setting at the next start.
pub fn session_key<'a>(requested: &'a str, parsed: &SubscriptionFilter<'_>) -> Cow<'a, str> {
    match parsed {
        SubscriptionFilter::Shared { group, filter }
            if requested.starts_with(LEGACY_SHARE_PREFIX) =>
        {
            Cow::Owned(format!("{SHARE_PREFIX}{group}/{filter}"))
        }
        _ => Cow::Borrowed(requested),
    }
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

    const LEGACY: ShareSyntax = ShareSyntax { legacy_colon: true };

    #[test]
    fn legacy_colon_form_is_a_share_when_enabled() {
        let parse = |f| parse_subscription_with(f, MAX, LEGACY);
        assert_eq!(
            parse("$share:my-group:myhome/groundfloor/+/temperature"),
            Ok(shared("my-group", "myhome/groundfloor/+/temperature"))
        );
        assert_eq!(parse("$share:g:#"), Ok(shared("g", "#")));
        // Only the first `:` after the group ends it; topics may contain colons.
        assert_eq!(parse("$share:g:a:b/c"), Ok(shared("g", "a:b/c")));
        // The standard spellings are unaffected.
        assert_eq!(parse("$share/g/a"), Ok(shared("g", "a")));
        assert_eq!(parse("$queue/a"), Ok(shared(QUEUE_GROUP, "a")));
        assert_eq!(parse("a/b"), Ok(SubscriptionFilter::Plain("a/b")));
    }

    #[test]
    fn legacy_colon_form_is_validated_like_the_standard_one() {
        for bad in [
            "$share:",
            "$share:g",
            "$share::x",
            "$share:g:",
            "$share:a+b:x",
            "$share:#:x",
            "$share:a/b:x",
        ] {
            assert!(
                matches!(
                    parse_subscription_with(bad, MAX, LEGACY),
                    Err(TopicError::InvalidShare(_))
                ),
                "{bad:?} -> {:?}",
                parse_subscription_with(bad, MAX, LEGACY)
            );
        }
        assert!(matches!(
            parse_subscription_with("$share:g:a/#/b", MAX, LEGACY),
            Err(TopicError::InvalidFilter(_))
        ));
        assert_eq!(
            parse_subscription_with("$share:g:a/b/c", 2, LEGACY),
            Err(TopicError::TooManyLevels { levels: 3, max: 2 })
        );
    }

    #[test]
    fn legacy_colon_form_is_a_plain_filter_by_default() {
        for f in [
            "$share:my-group:myhome/groundfloor/+/temperature",
            "$share:g",
            "$share:",
        ] {
            assert_eq!(parse_subscription(f, MAX), Ok(SubscriptionFilter::Plain(f)));
            assert_eq!(
                parse_subscription_with(f, MAX, ShareSyntax::default()),
                Ok(SubscriptionFilter::Plain(f))
            );
        }
        assert!(matches!(
            parse_subscription("$share:g:a+", MAX),
            Err(TopicError::InvalidFilter(_))
        ));
    }

    #[test]
    fn session_key_respells_only_the_legacy_form() {
        let key = |f: &'static str, syntax| {
            let parsed = parse_subscription_with(f, MAX, syntax).unwrap();
            session_key(f, &parsed).into_owned()
        };
        assert_eq!(key("$share:g:a/+", LEGACY), "$share/g/a/+");
        assert_eq!(key("$share/g/a/+", LEGACY), "$share/g/a/+");
        assert_eq!(key("$queue/a", LEGACY), "$queue/a");
        assert_eq!(key("a/b", LEGACY), "a/b");
        assert_eq!(key("$share:g:a", ShareSyntax::default()), "$share:g:a");
        // The respelled key parses back to the same share under either setting.
        for syntax in [LEGACY, ShareSyntax::default()] {
            assert_eq!(
                parse_subscription_with(&key("$share:g:a:b", LEGACY), MAX, syntax),
                Ok(shared("g", "a:b"))
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
