//! STUB, see mod.rs.

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

/// What a SUBSCRIBE filter string means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionFilter<'a> {
    /// An ordinary filter.
    Plain(&'a str),
    /// `$share/{group}/{filter}`, or `$queue/{filter}` (group is then `$queue`).
    Shared { group: &'a str, filter: &'a str },
}

/// A PUBLISH topic name: non-empty, no `+` or `#`, at most `max_levels` levels.
pub fn validate_topic_name(name: &str, max_levels: usize) -> Result<(), TopicError> {
    let _ = (name, max_levels);
    unimplemented!()
}

/// A plain topic filter: non-empty, `#` only last and alone in its level, `+` alone in its level.
pub fn validate_filter(filter: &str, max_levels: usize) -> Result<(), TopicError> {
    let _ = (filter, max_levels);
    unimplemented!()
}

/// Splits and validates a SUBSCRIBE filter, recognising `$share/` and `$queue/`.
pub fn parse_subscription(
    filter: &str,
    max_levels: usize,
) -> Result<SubscriptionFilter<'_>, TopicError> {
    let _ = (filter, max_levels);
    unimplemented!()
}
