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

use std::collections::{HashMap, HashSet};
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

    /// The ACL in force with the generation it belongs to, or an older generation: the
    /// generation is read first, so a reload in between shows as a newer one later.
    pub fn snapshot(&self) -> (u64, Option<Arc<Acl>>) {
        let generation = self.generation();
        (generation, self.current())
    }

    pub fn replace(&self, acl: Option<Acl>) {
        *self.current.write() = acl.map(Arc::new);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// What one subscription may receive: the read check at delivery, decided as far as possible
/// when the subscription is made, so that the publish path stays cheap. A filter readable
/// throughout (the common case) costs one atomic load per message; one that also reaches
/// unreadable topics (`#` beside `topic deny test/nosubscribe`) is matched per message against
/// the few rules that meet it, not the whole file. After a reload the precomputed answer is
/// stale, and every message is checked against the rules in force then, for the identity that
/// subscribed, until the client subscribes again.
#[derive(Debug)]
pub struct ReadGuard {
    handle: Arc<AclHandle>,
    /// The ACL generation `rules` was computed under.
    generation: u64,
    username: Option<ByteString>,
    client_id: ByteString,
    /// `None`: every topic the filter matches is readable. Otherwise the rules (patterns filled
    /// in) that can match a topic of the filter, which decide as the whole file would.
    rules: Option<Box<[(Access, String)]>>,
}

impl ReadGuard {
    /// The guard for `filter` (for `$share/G/F`, the `F`) subscribed by `who`; none when there
    /// is no ACL (and, there being no `acl_file`, never will be).
    pub fn new(handle: &Arc<AclHandle>, who: Identity<'_>, filter: &str) -> Option<Arc<ReadGuard>> {
        let (generation, acl) = handle.snapshot();
        let acl = acl?;
        let rules = if acl.reads_all(who, filter) {
            None
        } else {
            Some(
                acl.topic_rules(who)
                    .filter(|(_, rule)| intersects(rule, filter))
                    .collect(),
            )
        };
        Some(Arc::new(ReadGuard {
            handle: handle.clone(),
            generation,
            username: who.username.map(ByteString::from),
            client_id: ByteString::from(who.client_id),
            rules,
        }))
    }

    /// Whether the subscriber may receive a message on `topic` (one its filter matches).
    pub fn admits(&self, topic: &str) -> bool {
        if self.handle.generation() == self.generation {
            return match &self.rules {
                None => true,
                Some(rules) => {
                    decide_over(rules.iter().map(|(a, r)| (*a, r)), topic, Access::reads)
                }
            };
        }
        let who = Identity {
            username: self.username.as_deref(),
            client_id: &self.client_id,
        };
        self.handle
            .current()
            .is_none_or(|acl| acl.may_read(who, topic))
    }

    /// Whether messages are matched against rules one by one.
    pub fn checks_each_message(&self) -> bool {
        self.rules.is_some() || self.handle.generation() != self.generation
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

/// A matching `deny` rule refuses; otherwise a matching rule that `grants` allows.
fn decide_over<S: AsRef<str>>(
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

/// Search steps [`some_topic`] may take before it answers yes unproven. A yes grants a
/// subscription whose every message is still checked at delivery, so running out is safe;
/// real ACL files end far sooner.
const SEARCH_BUDGET: usize = 100_000;

/// One level of a candidate topic: a literal some filter names there, or a value no filter
/// names (and not starting with `$`), which stands for all such values alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level<'a> {
    Named(&'a str),
    Fresh,
}

/// Where a filter (split into levels) stands after taking `level` at depth `depth` from
/// position `at`; `None` once it cannot match. A `#` stays where it is.
fn step(filter: &[&str], at: usize, depth: usize, level: Level<'_>) -> Option<usize> {
    let current = *filter.get(at)?;
    // A leading wildcard never takes a `$` level [MQTT-4.7.2-1].
    let dollar = depth == 0 && matches!(level, Level::Named(l) if l.starts_with('$'));
    match current {
        "#" => (!dollar).then_some(at),
        "+" => (!dollar).then_some(at + 1),
        literal => (level == Level::Named(literal)).then_some(at + 1),
    }
}

/// Whether a filter at position `at` matches a topic that ends here.
fn ends(filter: &[&str], at: usize) -> bool {
    at == filter.len() || filter.get(at) == Some(&"#")
}

/// Whether some topic is matched by every filter in `all` and by none in `none`.
///
/// Topic levels range over an unbounded alphabet, but at each depth only the literals the
/// filters name there can tell the filters apart; every other value behaves as
/// [`Level::Fresh`] does. And no topic needs more levels than the longest filter has plus one:
/// past that, only `#` still matches. So a depth-first search over those candidates decides
/// it, remembering the states already found fruitless.
fn some_topic(all: &[&str], none: &[&str]) -> bool {
    let all: Vec<Vec<&str>> = all.iter().map(|f| f.split('/').collect()).collect();
    let none: Vec<Vec<&str>> = none.iter().map(|f| f.split('/').collect()).collect();
    let deepest = all.iter().chain(&none).map(Vec::len).max().unwrap_or(0);
    let mut search = Search {
        all: &all,
        none: &none,
        deepest,
        budget: SEARCH_BUDGET,
        fruitless: HashSet::new(),
    };
    let start_none = (0..none.len()).map(|i| (i, 0)).collect();
    search.from(0, vec![0; all.len()], start_none)
}

/// A search state: depth, the `all` filters' positions, the live `none` filters' positions.
type State = (usize, Vec<usize>, Vec<(usize, usize)>);

struct Search<'a> {
    all: &'a [Vec<&'a str>],
    none: &'a [Vec<&'a str>],
    deepest: usize,
    budget: usize,
    fruitless: HashSet<State>,
}

impl Search<'_> {
    /// From a topic prefix of `depth` levels, with the positions of the `all` filters and of
    /// the `none` filters that still match it.
    fn from(&mut self, depth: usize, all: Vec<usize>, none: Vec<(usize, usize)>) -> bool {
        if self.budget == 0 {
            return true;
        }
        self.budget -= 1;
        if depth > 0 {
            let all_end = all.iter().zip(self.all).all(|(&at, f)| ends(f, at));
            if all_end && !none.iter().any(|&(i, at)| ends(&self.none[i], at)) {
                return true;
            }
            // A `#` among the excluded ones matches every longer topic too.
            if none
                .iter()
                .any(|&(i, at)| self.none[i].get(at) == Some(&"#"))
            {
                return false;
            }
        }
        if depth > self.deepest {
            return false;
        }
        let state = (depth, all, none);
        if self.fruitless.contains(&state) {
            return false;
        }
        let (_, all, none) = &state;
        let mut candidates = vec![Level::Fresh];
        let named = all
            .iter()
            .zip(self.all)
            .map(|(&at, f)| f.get(at))
            .chain(none.iter().map(|&(i, at)| self.none[i].get(at)));
        for &level in named.flatten() {
            if level != "+" && level != "#" && !candidates.contains(&Level::Named(level)) {
                candidates.push(Level::Named(level));
            }
        }
        for level in candidates {
            let next_all: Option<Vec<usize>> = all
                .iter()
                .zip(self.all)
                .map(|(&at, f)| step(f, at, depth, level))
                .collect();
            let Some(next_all) = next_all else { continue };
            let next_none = none
                .iter()
                .filter_map(|&(i, at)| step(&self.none[i], at, depth, level).map(|at| (i, at)))
                .collect();
            if self.from(depth + 1, next_all, next_none) {
                return true;
            }
        }
        self.fruitless.insert(state);
        false
    }
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
    fn subscribe_needs_something_readable() {
        let acl = acl();
        let alice = who(Some("alice"), "a1");
        assert!(acl.may_subscribe(alice, "alice/inbox/+"));
        assert!(
            acl.may_subscribe(alice, "alice/#"),
            "meets a deny rule, reads the rest"
        );
        assert!(acl.may_subscribe(alice, "#"));
        assert!(acl.may_subscribe(alice, "users/alice/#"));
        assert!(acl.may_subscribe(alice, "users/+/x"), "users/alice/x");
        assert!(acl.may_subscribe(alice, "$SYS/broker/#"));
        assert!(!acl.may_subscribe(alice, "alice/secret/#"), "all denied");
        assert!(!acl.may_subscribe(alice, "alice/secret/+/x"));
        assert!(!acl.may_subscribe(alice, "public/x"), "nothing granted");
        assert!(!acl.may_subscribe(alice, "users/bob/x"));
        let bob = who(Some("bob"), "b");
        assert!(acl.may_subscribe(bob, "alice/notes"));
        assert!(acl.may_subscribe(bob, "alice/+"));
        assert!(!acl.may_subscribe(bob, "alice/other"));
        assert!(!acl.may_subscribe(bob, "alice/+/x"));
        assert!(acl.may_read(bob, "alice/notes"));
        assert!(!acl.may_read(bob, "alice/other"));
    }

    /// Paho's interoperability suite runs under this two-line file.
    const PAHO: &str = "topic readwrite #\ntopic deny test/nosubscribe\n";

    #[test]
    fn one_deny_rule_leaves_wildcards_granted() {
        let acl = Acl::parse(PAHO, "t").unwrap();
        let anon = who(None, "c");
        for granted in [
            "#",
            "+/+",
            "test/#",
            "test/+",
            "TopicA/#",
            "test/nosubscribe/#",
        ] {
            assert!(acl.may_subscribe(anon, granted), "{granted}");
        }
        assert!(!acl.may_subscribe(anon, "test/nosubscribe"));
        assert!(
            !acl.may_subscribe(anon, "$SYS/#"),
            "no rule reaches $ topics"
        );
        let all_of_test = Acl::parse("topic readwrite #\ntopic deny test/#\n", "t").unwrap();
        for refused in ["test/#", "test/+", "test", "test/+/x"] {
            assert!(!all_of_test.may_subscribe(anon, refused), "{refused}");
        }
        assert!(all_of_test.may_subscribe(anon, "+/+"));
        assert!(all_of_test.may_subscribe(anon, "#"));
    }

    #[test]
    fn deny_rules_that_cover_a_filter_only_together_refuse_it() {
        // `a` and `a/+/#` between them deny all of `a/#`; neither does alone.
        let acl = Acl::parse("topic read #\ntopic deny a\ntopic deny a/+/#\n", "t").unwrap();
        let anon = who(None, "c");
        assert!(!acl.may_subscribe(anon, "a/#"));
        assert!(acl.may_subscribe(anon, "+/#"));
        // A read rule only for the second level of `x/+`, the rest denied in two parts.
        let acl = Acl::parse("topic read x/+\ntopic deny x/a\ntopic deny x/b\n", "t").unwrap();
        assert!(acl.may_subscribe(anon, "x/+"), "x/c and every other level");
        assert!(!acl.may_subscribe(anon, "x/a"));
    }

    #[test]
    fn a_guard_checks_only_filters_that_reach_unreadable_topics() {
        let handle = Arc::new(AclHandle::new(Some(Acl::parse(PAHO, "t").unwrap())));
        let anon = who(None, "c");
        let everything = ReadGuard::new(&handle, anon, "#").unwrap();
        assert!(everything.checks_each_message());
        assert!(everything.admits("TopicA/B"));
        assert!(!everything.admits("test/nosubscribe"));
        assert!(everything.admits("test/nosubscribe/deeper"));
        let plain = ReadGuard::new(&handle, anon, "TopicA/#").unwrap();
        assert!(!plain.checks_each_message(), "readable throughout");
        assert!(plain.admits("TopicA/B"));
        // A reload narrows the rules under both: checked per message from then on.
        handle.replace(Some(
            Acl::parse("topic read #\ntopic deny TopicA/B\n", "t").unwrap(),
        ));
        assert!(plain.checks_each_message());
        assert!(!plain.admits("TopicA/B"));
        assert!(plain.admits("TopicA/C"));
        assert!(everything.admits("test/nosubscribe"));
        assert!(ReadGuard::new(&Arc::new(AclHandle::new(None)), anon, "#").is_none());
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

    fn access() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("read"), Just("write"), Just("readwrite"), Just("deny")]
    }

    /// Every topic of 1 to 5 levels over the rules' literals and `z`, which no rule names and so
    /// stands for every other level: enough to find a readable topic if there is one (the
    /// filters have at most 4 levels).
    fn every_topic() -> Vec<String> {
        let alphabet = ["a", "b", "$s", "z"];
        let mut all = Vec::new();
        let mut layer: Vec<String> = alphabet.iter().map(|l| (*l).to_owned()).collect();
        for _ in 0..5 {
            all.extend(layer.iter().cloned());
            layer = layer
                .iter()
                .flat_map(|t| alphabet.iter().map(move |l| format!("{t}/{l}")))
                .collect();
        }
        all
    }

    proptest! {
        /// A filter is refused iff every topic it can match is unreadable, and a guard admits
        /// exactly the readable ones: both checked against every topic of a small alphabet.
        #[test]
        fn subscribe_and_guard_agree_with_every_topic(
            rules in proptest::collection::vec((access(), filter()), 0..6),
            f in filter(),
        ) {
            let text: String = rules.iter().map(|(a, r)| format!("topic {a} {r}\n")).collect();
            let handle = Arc::new(AclHandle::new(Some(Acl::parse(&text, "t").unwrap())));
            let acl = handle.current().unwrap();
            let anon = who(None, "c");
            let guard = ReadGuard::new(&handle, anon, &f).unwrap();
            let mut readable = false;
            for t in every_topic().iter().filter(|t| filter_matches(&f, t)) {
                let reads = acl.may_read(anon, t);
                readable |= reads;
                prop_assert_eq!(guard.admits(t), reads, "{} under {:?}", t, text);
            }
            prop_assert_eq!(acl.may_subscribe(anon, &f), readable, "{} under {:?}", f, text);
        }

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
