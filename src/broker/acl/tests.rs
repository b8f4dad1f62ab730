//! The decisions of a whole file: publish, subscribe, join, and the read guard against them.

use super::*;
use crate::topic::filter_matches;
use proptest::prelude::*;
use std::sync::Arc;

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

pub(super) fn who<'a>(username: Option<&'a str>, client_id: &'a str) -> Identity<'a> {
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
pub(super) const PAHO: &str = "topic readwrite #\ntopic deny test/nosubscribe\n";

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

fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("$s".to_owned()),
        Just("+".to_owned())
    ]
}

pub(super) fn filter() -> impl Strategy<Value = String> {
    (proptest::collection::vec(level(), 1..4), any::<bool>()).prop_map(|(mut l, hash)| {
        if hash {
            l.push("#".to_owned());
        }
        l.join("/")
    })
}

pub(super) fn topic() -> impl Strategy<Value = String> {
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
}
