//! Authorization: who may publish, subscribe to, and join what — read from a Mosquitto
//! `acl_file`, so users bring theirs unchanged, plus one sharq extension for shared groups.
//!
//! ```text
//! # rules before the first `user` line are for anonymous clients
//! topic read public/#
//! user alice
//! topic readwrite alice/#          # read | write | readwrite | deny; none = readwrite
//! topic deny alice/secret/#
//! share orders-*                   # sharq: alice may join shared groups matching the glob
//! pattern write devices/%c/status  # every client; %c = client id, %u = username
//! ```
//!
//! With an ACL file, everything not granted is refused. A `deny` rule that matches wins over
//! every grant. A publish needs a `write`/`readwrite` rule matching the topic. A subscription is
//! refused only when nothing its filter can match is readable (`test/nosubscribe` under
//! `topic deny test/nosubscribe`); a filter that reaches readable and unreadable topics alike
//! (`#` beside that deny rule) is granted, and each message is checked at delivery, as
//! Mosquitto checks read access per message for every subscriber. [`ReadGuard`] keeps that
//! check off the common path: a filter that is readable throughout is never matched per message.
//! Once a file has any `share` rule, joining `$share/GROUP/...` also needs a `share` rule whose
//! glob matches GROUP (`$queue/...` is the group `$queue`); a file without `share` rules leaves
//! group joins to the topic rules alone, as Mosquitto does.
//!
//! [`parse`] reads the file; this module decides with it; [`matching`] and [`search`] hold the
//! filter relations the decisions rest on; [`handle`] keeps the ACL in force across reloads;
//! [`guard`] and [`publish_cache`] keep the checks off the message path.

mod guard;
mod handle;
mod matching;
mod parse;
mod publish_cache;
mod search;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;

use globset::GlobMatcher;

pub use guard::ReadGuard;
pub use handle::AclHandle;
pub use matching::{covers, intersects};
pub use publish_cache::PublishCache;

use matching::decide_over;
use search::some_topic;

#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("cannot read ACL file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("ACL file {path}, line {line}: {reason}")]
    Syntax {
        path: String,
        line: usize,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Access {
    fn reads(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }

    fn writes(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }
}

#[derive(Debug, Clone)]
struct TopicRule {
    access: Access,
    /// A topic filter; for `pattern` rules it may hold `%c` and `%u`.
    filter: String,
}

/// The rules that apply to one kind of client.
#[derive(Debug, Default, Clone)]
struct RuleSet {
    topics: Vec<TopicRule>,
    shares: Vec<GlobMatcher>,
}

/// Who is asking: the connection's username (none for anonymous) and client id.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub username: Option<&'a str>,
    pub client_id: &'a str,
}

/// A parsed ACL file.
#[derive(Debug, Default)]
pub struct Acl {
    anonymous: RuleSet,
    users: HashMap<String, RuleSet>,
    /// `pattern` rules: for every client, with `%c` / `%u` filled in.
    patterns: Vec<TopicRule>,
    /// Whether group joins are restricted (the file has a `share` rule somewhere).
    restricts_shares: bool,
    pub path: PathBuf,
}
impl Acl {
    /// The topic rules for `who`, pattern rules filled in (a pattern that needs a username
    /// an anonymous client lacks, or that would gain wildcards from one, is left out).
    fn topic_rules<'a>(&'a self, who: Identity<'a>) -> impl Iterator<Item = (Access, String)> + 'a {
        let own = match who.username {
            Some(name) => self.users.get(name),
            None => Some(&self.anonymous),
        };
        let own = own
            .into_iter()
            .flat_map(|set| set.topics.iter())
            .map(|rule| (rule.access, rule.filter.clone()));
        let patterns = self.patterns.iter().filter_map(move |rule| {
            let mut filter = rule.filter.clone();
            if filter.contains("%u") {
                let name = who.username.filter(|n| is_literal_level(n))?;
                filter = filter.replace("%u", name);
            }
            if filter.contains("%c") {
                if !is_literal_level(who.client_id) {
                    return None;
                }
                filter = filter.replace("%c", who.client_id);
            }
            Some((rule.access, filter))
        });
        own.chain(patterns)
    }

    /// May `who` publish on `topic`? Wills are checked with this too, when they are sent.
    pub fn may_publish(&self, who: Identity<'_>, topic: &str) -> bool {
        self.decide(who, topic, Access::writes)
    }

    /// May `who` receive a message on `topic` (a retained message at subscribe time)?
    pub fn may_read(&self, who: Identity<'_>, topic: &str) -> bool {
        self.decide(who, topic, Access::reads)
    }

    fn decide(&self, who: Identity<'_>, topic: &str, grants: fn(Access) -> bool) -> bool {
        decide_over(self.topic_rules(who), topic, grants)
    }

    /// May `who` subscribe with `filter` (for `$share/G/F`, the `F`)? Yes if some topic the
    /// filter can match is readable; what it matches beyond that is filtered at delivery
    /// (see [`ReadGuard`]).
    pub fn may_subscribe(&self, who: Identity<'_>, filter: &str) -> bool {
        let rules: Vec<(Access, String)> = self
            .topic_rules(who)
            .filter(|(_, rule)| intersects(rule, filter))
            .collect();
        let denies: Vec<&str> = rules
            .iter()
            .filter(|(access, _)| *access == Access::Deny)
            .map(|(_, rule)| rule.as_str())
            .collect();
        rules
            .iter()
            .filter(|(access, _)| access.reads())
            .any(|(_, rule)| some_topic(&[filter, rule], &denies))
    }

    /// Whether every topic `filter` can match is readable by `who`: one `read`/`readwrite` rule
    /// covers the whole filter and no `deny` rule meets it. Sound, not complete (a filter
    /// covered only by several rules together is not recognised): a `false` only costs a
    /// check per message.
    fn reads_all(&self, who: Identity<'_>, filter: &str) -> bool {
        let mut granted = false;
        for (access, rule) in self.topic_rules(who) {
            if access == Access::Deny {
                if intersects(&rule, filter) {
                    return false;
                }
            } else if access.reads() && covers(&rule, filter) {
                granted = true;
            }
        }
        granted
    }

    /// May `who` join shared group `group`?
    pub fn may_join(&self, who: Identity<'_>, group: &str) -> bool {
        if !self.restricts_shares {
            return true;
        }
        let own = match who.username {
            Some(name) => self.users.get(name),
            None => Some(&self.anonymous),
        };
        own.is_some_and(|set| set.shares.iter().any(|glob| glob.is_match(group)))
    }
}

/// A username or client id that can stand in one topic level without changing the filter.
fn is_literal_level(value: &str) -> bool {
    !value.is_empty() && !value.contains(['/', '+', '#'])
}
