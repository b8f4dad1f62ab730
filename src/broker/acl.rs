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
//! every grant. A publish needs a `write`/`readwrite` rule matching the topic; a subscription is
//! granted only when every topic its filter can match is readable (a `read`/`readwrite` rule
//! covers the whole filter and no `deny` rule meets it), so no message is ever filtered at
//! delivery. Once a file has any `share` rule, joining `$share/GROUP/...` also needs a `share`
//! rule whose glob matches GROUP (`$queue/...` is the group `$queue`); a file without `share`
//! rules leaves group joins to the topic rules alone, as Mosquitto does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytestring::ByteString;
use globset::{Glob, GlobMatcher};
use parking_lot::RwLock;

use crate::broker::routing::retain::filter_matches;

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
    pub fn load(path: &Path) -> Result<Acl, AclError> {
        let text = std::fs::read_to_string(path).map_err(|e| AclError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut acl = Acl::parse(&text, &path.display().to_string())?;
        acl.path = path.to_path_buf();
        Ok(acl)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Acl, AclError> {
        let mut acl = Acl::default();
        let mut current: Option<String> = None;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let syntax = |reason: &str| AclError::Syntax {
                path: origin.to_owned(),
                line,
                reason: reason.to_owned(),
            };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (keyword, rest) = trimmed
                .split_once(char::is_whitespace)
                .map_or((trimmed, ""), |(k, r)| (k, r.trim()));
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(syntax("`user` needs a username"));
                    }
                    acl.users.entry(rest.to_owned()).or_default();
                    current = Some(rest.to_owned());
                }
                "topic" | "pattern" => {
                    let rule = parse_topic_rule(rest).map_err(|r| syntax(&r))?;
                    if keyword == "pattern" {
                        acl.patterns.push(rule);
                    } else {
                        acl.rule_set(&current).topics.push(rule);
                    }
                }
                "share" => {
                    if rest.is_empty() || rest.contains(char::is_whitespace) {
                        return Err(syntax("`share` needs one group-name glob"));
                    }
                    let glob = Glob::new(rest)
                        .map_err(|e| syntax(&format!("bad glob `{rest}`: {e}")))?
                        .compile_matcher();
                    acl.rule_set(&current).shares.push(glob);
                    acl.restricts_shares = true;
                }
                other => {
                    return Err(syntax(&format!(
                        "unknown keyword `{other}` (expected user, topic, pattern or share)"
                    )))
                }
            }
        }
        Ok(acl)
    }

    fn rule_set(&mut self, user: &Option<String>) -> &mut RuleSet {
        match user {
            Some(name) => self.users.entry(name.clone()).or_default(),
            None => &mut self.anonymous,
        }
    }

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
        let mut granted = false;
        for (access, filter) in self.topic_rules(who) {
            if !filter_matches(&filter, topic) {
                continue;
            }
            if access == Access::Deny {
                return false;
            }
            granted |= grants(access);
        }
        granted
    }

    /// May `who` subscribe with `filter` (for `$share/G/F`, the `F`)? Only if every topic the
    /// filter can match is readable.
    pub fn may_subscribe(&self, who: Identity<'_>, filter: &str) -> bool {
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

/// The ACL in force: none without `[auth] acl_file` (everything allowed), replaced whole on
/// reload.
#[derive(Debug, Default)]
pub struct AclHandle {
    /// A leaf lock, held only to clone the `Arc` out.
    current: RwLock<Option<Arc<Acl>>>,
    /// Bumped at every replacement, so connections drop the decisions they cached.
    generation: AtomicU64,
}

impl AclHandle {
    pub fn new(acl: Option<Acl>) -> AclHandle {
        AclHandle {
            current: RwLock::new(acl.map(Arc::new)),
            generation: AtomicU64::new(0),
        }
    }

    pub fn current(&self) -> Option<Arc<Acl>> {
        self.current.read().clone()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn replace(&self, acl: Option<Acl>) {
        *self.current.write() = acl.map(Arc::new);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// A connection's publish decisions by topic, so the hot path matches the ACL once per topic
/// (a device publishes to a handful), not once per message. Bounded: cleared when full.
#[derive(Debug, Default)]
pub struct PublishCache {
    generation: u64,
    decisions: HashMap<ByteString, bool>,
}

/// Topics one connection's cache remembers before it starts afresh.
const CACHE_TOPICS: usize = 1024;

impl PublishCache {
    /// Whether `who` may publish on `topic` under the ACL in `handle`.
    pub fn may_publish(
        &mut self,
        handle: &AclHandle,
        who: Identity<'_>,
        topic: &ByteString,
    ) -> bool {
        let generation = handle.generation();
        if generation != self.generation {
            self.decisions.clear();
            self.generation = generation;
        }
        if let Some(decision) = self.decisions.get(topic) {
            return *decision;
        }
        let decision = handle
            .current()
            .is_none_or(|acl| acl.may_publish(who, topic));
        if self.decisions.len() >= CACHE_TOPICS {
            self.decisions.clear();
        }
        self.decisions.insert(topic.clone(), decision);
        decision
    }
}

fn parse_topic_rule(rest: &str) -> Result<TopicRule, String> {
    let (access, filter) = match rest.split_once(char::is_whitespace) {
        Some((word, filter)) => match word {
            "read" => (Access::Read, filter.trim()),
            "write" => (Access::Write, filter.trim()),
            "readwrite" => (Access::ReadWrite, filter.trim()),
            "deny" => (Access::Deny, filter.trim()),
            // No access word: the whole rest is the filter (Mosquitto allows spaces in topics).
            _ => (Access::ReadWrite, rest),
        },
        None => (Access::ReadWrite, rest),
    };
    if filter.is_empty() {
        return Err("a topic rule needs a topic filter".to_owned());
    }
    if crate::topic::validate_filter(filter, usize::MAX).is_err() {
        return Err(format!("`{filter}` is not a valid topic filter"));
    }
    Ok(TopicRule {
        access,
        filter: filter.to_owned(),
    })
}

/// A username or client id that can stand in one topic level without changing the filter.
fn is_literal_level(value: &str) -> bool {
    !value.is_empty() && !value.contains(['/', '+', '#'])
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
    use super::*;
    use proptest::prelude::*;

    const FILE: &str = "\
# anonymous
topic read public/#
topic write anon/in

user alice
topic readwrite alice/#
topic deny alice/secret/#
topic $SYS/#
share orders-*

user bob
topic read alice/notes

pattern write devices/%c/status
pattern read users/%u/#
";

    fn acl() -> Acl {
        Acl::parse(FILE, "test").unwrap()
    }

    fn who<'a>(username: Option<&'a str>, client_id: &'a str) -> Identity<'a> {
        Identity {
            username,
            client_id,
        }
    }

    #[test]
    fn publish_needs_a_write_rule_and_deny_wins() {
        let acl = acl();
        let alice = who(Some("alice"), "a1");
        assert!(acl.may_publish(alice, "alice/x"));
        assert!(!acl.may_publish(alice, "alice/secret/x"));
        assert!(!acl.may_publish(alice, "public/x"));
        assert!(acl.may_publish(alice, "devices/a1/status"));
        assert!(!acl.may_publish(alice, "devices/other/status"));
        let anon = who(None, "x");
        assert!(acl.may_publish(anon, "anon/in"));
        assert!(!acl.may_publish(anon, "public/x"), "read only");
        assert!(
            !acl.may_publish(who(Some("mallory"), "m"), "anon/in"),
            "anonymous rules are not a named user's"
        );
    }

    #[test]
    fn subscribe_needs_the_whole_filter_readable() {
        let acl = acl();
        let alice = who(Some("alice"), "a1");
        assert!(acl.may_subscribe(alice, "alice/inbox/+"));
        assert!(!acl.may_subscribe(alice, "alice/#"), "meets a deny rule");
        assert!(!acl.may_subscribe(alice, "#"));
        assert!(acl.may_subscribe(alice, "users/alice/#"));
        assert!(!acl.may_subscribe(alice, "users/+/x"));
        assert!(acl.may_subscribe(alice, "$SYS/broker/#"));
        let bob = who(Some("bob"), "b");
        assert!(acl.may_subscribe(bob, "alice/notes"));
        assert!(!acl.may_subscribe(bob, "alice/+"));
        assert!(acl.may_read(bob, "alice/notes"));
        assert!(!acl.may_read(bob, "alice/other"));
    }

    #[test]
    fn share_rules_restrict_group_joins() {
        let acl = acl();
        assert!(acl.may_join(who(Some("alice"), "a"), "orders-eu"));
        assert!(!acl.may_join(who(Some("alice"), "a"), "billing"));
        assert!(!acl.may_join(who(Some("bob"), "b"), "orders-eu"));
        let open = Acl::parse("topic read #\n", "t").unwrap();
        assert!(open.may_join(who(None, "c"), "anything"));
    }

    #[test]
    fn patterns_never_gain_wildcards_from_names() {
        let acl = acl();
        assert!(!acl.may_publish(who(None, "+"), "devices/+/status"));
        assert!(!acl.may_subscribe(who(Some("#"), "c"), "users/#/x"));
        assert!(
            !acl.may_read(who(None, "c"), "users/x/y"),
            "%u needs a username"
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = Acl::parse("user a\ntopic read a/#/b\n", "f.acl").unwrap_err();
        assert!(err.to_string().contains("f.acl, line 2"), "{err}");
        let err = Acl::parse("topik read a\n", "f.acl").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }

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

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("$s".to_owned()),
            Just("+".to_owned())
        ]
    }

    fn filter() -> impl Strategy<Value = String> {
        (proptest::collection::vec(level(), 1..4), any::<bool>()).prop_map(|(mut l, hash)| {
            if hash {
                l.push("#".to_owned());
            }
            l.join("/")
        })
    }

    fn topic() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![Just("a"), Just("b"), Just("$s"), Just("c")],
            1..5,
        )
        .prop_map(|l| l.join("/"))
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
