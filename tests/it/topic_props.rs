//! Property tests for the topic module: the trie against a naive matcher, insert/remove against a
//! `HashMap` model, and validation against arbitrary input.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use sharq::topic::{
    parse_subscription, parse_subscription_with, session_key, validate_filter, validate_topic_name,
    ShareSyntax, SubscriptionFilter, TopicTree,
};

/// Level-by-level matching, written for obviousness rather than speed.
fn reference_match(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    for (i, level) in f.iter().enumerate() {
        if *level == "#" {
            // Matches the parent level too: `a/#` matches `a`.
            return true;
        }
        match t.get(i) {
            Some(tl) if *level == "+" || level == tl => {}
            _ => return false,
        }
    }
    f.len() == t.len()
}

/// A small alphabet so that random filters and topics actually collide.
fn topic_level() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["", "a", "b", "$s"])
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(topic_level(), 1..5).prop_map(|levels| levels.join("/"))
}

fn filter() -> impl Strategy<Value = String> {
    let level = prop::sample::select(vec!["", "a", "b", "$s", "+"]);
    (prop::collection::vec(level, 0..4), any::<bool>()).prop_filter_map(
        "a filter is non-empty",
        |(mut levels, hash)| {
            if hash {
                levels.push("#");
            }
            Some(levels.join("/")).filter(|f| !f.is_empty())
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn matches_agree_with_reference(
        filters in prop::collection::hash_set(filter(), 0..40),
        topics in prop::collection::vec(topic(), 1..8),
    ) {
        let mut tree = TopicTree::new();
        for f in &filters {
            prop_assert!(validate_filter(f, 16).is_ok(), "generator made invalid {:?}", f);
            tree.get_or_insert_with(f, || f.clone());
        }
        for t in &topics {
            let mut visited = Vec::new();
            tree.for_each_match(t, |v| visited.push(v.clone()));
            let unique: HashSet<String> = visited.iter().cloned().collect();
            prop_assert_eq!(unique.len(), visited.len(), "a filter was visited twice for {:?}", t);
            let expected: HashSet<String> =
                filters.iter().filter(|f| reference_match(f, t)).cloned().collect();
            prop_assert_eq!(unique, expected, "topic {:?}", t);
        }
    }

    #[test]
    fn insert_remove_agrees_with_model(
        ops in prop::collection::vec((any::<bool>(), filter(), any::<u32>()), 0..80),
    ) {
        let mut tree = TopicTree::new();
        let mut model: HashMap<String, u32> = HashMap::new();
        for (insert, f, v) in ops {
            if insert {
                let stored = *tree.get_or_insert_with(&f, || v);
                let expected = *model.entry(f.clone()).or_insert(v);
                prop_assert_eq!(stored, expected);
            } else {
                prop_assert_eq!(tree.remove(&f), model.remove(&f));
            }
            prop_assert_eq!(tree.len(), model.len());
            prop_assert_eq!(tree.get(&f), model.get(&f));
        }
        let mut listed = HashMap::new();
        tree.for_each(|f, v| {
            listed.insert(f.to_owned(), *v);
        });
        prop_assert_eq!(&listed, &model);
        for (f, v) in model.drain() {
            prop_assert_eq!(tree.remove(&f), Some(v));
        }
        prop_assert!(tree.is_empty());
        let mut left = 0;
        tree.for_each(|_, _| left += 1);
        prop_assert_eq!(left, 0);
    }

    #[test]
    fn validation_never_panics(s in ".{0,40}", max in 0usize..8) {
        check_validators(&s, max)?;
    }

    #[test]
    fn validation_never_panics_on_topic_syntax(
        s in "(\\$share/|\\$queue/|\\$share|/|\\+|#|a|\\$)*",
        max in 0usize..8,
    ) {
        check_validators(&s, max)?;
    }

    #[test]
    fn legacy_colon_syntax_agrees_with_the_standard_one(
        s in "(\\$share:|\\$share/|:|/|\\+|#|a|\\$)*",
        max in 0usize..8,
    ) {
        check_legacy(&s, max)?;
    }
}

/// With the legacy colon syntax on, a filter parses as the standard syntax would, except that
/// `$share:G:F` is the share `$share/G/F` (valid exactly when that spelling is), and the
/// session key of either spelling parses back to the same share under either setting.
fn check_legacy(s: &str, max: usize) -> Result<(), TestCaseError> {
    let legacy = ShareSyntax { legacy_colon: true };
    let with = parse_subscription_with(s, max, legacy);
    match s.strip_prefix("$share:") {
        None => prop_assert_eq!(&with, &parse_subscription(s, max)),
        Some(rest) => {
            let standard = rest
                .split_once(':')
                .filter(|(group, _)| !group.contains('/'))
                .map(|(group, filter)| format!("$share/{group}/{filter}"));
            match standard {
                None => prop_assert!(with.is_err(), "{:?} -> {:?}", s, with),
                Some(standard) => {
                    let expected = parse_subscription(&standard, max);
                    prop_assert_eq!(with.is_ok(), expected.is_ok(), "{:?} vs {:?}", s, standard);
                    if let (Ok(parsed), Ok(expected)) = (&with, &expected) {
                        prop_assert_eq!(parsed, expected);
                        let key = session_key(s, parsed);
                        prop_assert_eq!(key.as_ref(), standard.as_str());
                        for syntax in [legacy, ShareSyntax::default()] {
                            prop_assert_eq!(
                                &parse_subscription_with(&key, max, syntax),
                                &Ok(expected.clone())
                            );
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Runs every validator and checks that their answers are consistent with each other.
fn check_validators(s: &str, max: usize) -> Result<(), TestCaseError> {
    let name_ok = validate_topic_name(s, max).is_ok();
    let filter_ok = validate_filter(s, max).is_ok();
    // A topic name is a filter without wildcards.
    prop_assert!(
        !name_ok || filter_ok,
        "{:?} is a valid name but not a valid filter",
        s
    );
    match parse_subscription(s, max) {
        Ok(SubscriptionFilter::Plain(f)) => {
            prop_assert_eq!(f, s);
            prop_assert!(filter_ok);
        }
        Ok(SubscriptionFilter::Shared { group, filter }) => {
            prop_assert!(!group.is_empty() && !group.contains(['/', '+', '#']));
            prop_assert!(validate_filter(filter, max).is_ok());
        }
        Err(_) => {}
    }
    Ok(())
}
