//! The subscription tree: a trie over topic-filter levels.
//!
//! Matching runs for every PUBLISH, so it neither allocates nor copies the topic: the topic is
//! split lazily with `split('/')`, literal children are looked up by `&str`, and recursion only
//! happens where a `+` branch forks the walk. The wildcards live in dedicated slots rather than in
//! the children map so a lookup never hashes them and a literal level can never be mistaken for
//! one.

use std::collections::HashMap;
use std::str::Split;

use ahash::RandomState;

/// A subscription tree keyed by topic-filter level. Each filter owns one value `V` (the broker
/// keeps its subscribers and shared groups there).
///
/// Filters are expected to be validated (`validate_filter`) first: the tree does not reject
/// invalid ones, it stores a `#` that is not the last level as a literal level, which no valid
/// topic name can match. Depth is bounded by the validated level count, which also bounds the
/// recursion in matching, removal and drop.
#[derive(Debug)]
pub struct TopicTree<V> {
    /// The empty path: holds no value of its own (every filter has at least one level), only
    /// `#` at `hash`, `+` at `plus` and the first literal levels.
    root: Node<V>,
    /// Number of stored filters, kept here so `len` is O(1) for metrics and limits.
    len: usize,
}

#[derive(Debug)]
struct Node<V> {
    /// Value of the filter that ends exactly at this node.
    value: Option<V>,
    /// Value of the filter `<this node's path>/#`. `#` can only be the last level, so it needs
    /// a value and no subtree.
    hash: Option<V>,
    /// The subtree under a `+` level. Boxed because most nodes have none and `Node` is large.
    plus: Option<Box<Node<V>>>,
    /// Literal next levels. A randomly keyed hasher because the keys come from clients, who
    /// could otherwise pick colliding levels to slow down every publish on that branch.
    children: HashMap<Box<str>, Node<V>, RandomState>,
}

impl<V> Default for TopicTree<V> {
    fn default() -> Self {
        TopicTree {
            root: Node::new(),
            len: 0,
        }
    }
}

impl<V> Node<V> {
    fn new() -> Self {
        Node {
            value: None,
            hash: None,
            plus: None,
            children: HashMap::with_hasher(RandomState::new()),
        }
    }

    fn is_empty(&self) -> bool {
        self.value.is_none()
            && self.hash.is_none()
            && self.plus.is_none()
            && self.children.is_empty()
    }

    fn child(&self, level: &str) -> Option<&Node<V>> {
        match level {
            "+" => self.plus.as_deref(),
            _ => self.children.get(level),
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Node<V>> {
        match level {
            "+" => self.plus.as_deref_mut(),
            _ => self.children.get_mut(level),
        }
    }

    /// Visits every value under `self` matching the rest of the topic, `levels`.
    ///
    /// Loops down the literal branch and recurses only into `+` branches, so the stack depth is
    /// the number of `+` levels on the matching paths rather than the topic's length.
    fn walk(&self, mut levels: Split<'_, char>, visit: &mut impl FnMut(&V)) {
        let mut node = self;
        loop {
            // `a/#` matches `a` itself as well as everything below it [MQTT-4.7.1-1].
            if let Some(v) = &node.hash {
                visit(v);
            }
            let Some(level) = levels.next() else {
                if let Some(v) = &node.value {
                    visit(v);
                }
                return;
            };
            if let Some(plus) = &node.plus {
                plus.walk(levels.clone(), visit);
            }
            if node.children.is_empty() {
                return;
            }
            match node.children.get(level) {
                Some(child) => node = child,
                None => return,
            }
        }
    }

    fn for_each_in(&self, path: &mut String, at_root: bool, f: &mut impl FnMut(&str, &V)) {
        if let Some(v) = &self.value {
            f(path, v);
        }
        if let Some(v) = &self.hash {
            with_level(path, at_root, "#", |path| f(path, v));
        }
        if let Some(plus) = &self.plus {
            with_level(path, at_root, "+", |path| plus.for_each_in(path, false, f));
        }
        for (level, child) in &self.children {
            with_level(path, at_root, level, |path| {
                child.for_each_in(path, false, f)
            });
        }
    }
}

/// Runs `f` with `level` appended to `path`, then restores `path`, so `for_each` reuses one
/// buffer for the whole walk.
fn with_level(path: &mut String, at_root: bool, level: &str, f: impl FnOnce(&mut String)) {
    let len = path.len();
    if !at_root {
        path.push('/');
    }
    path.push_str(level);
    f(path);
    path.truncate(len);
}

/// Splits a filter into the levels that lead to a node and whether it ends in `#`, which is
/// stored in that node's `hash` slot rather than in a node of its own.
fn split_filter(filter: &str) -> (Option<&str>, bool) {
    if filter == "#" {
        (None, true)
    } else if let Some(path) = filter.strip_suffix("/#") {
        (Some(path), true)
    } else {
        (Some(filter), false)
    }
}

fn path_levels(path: Option<&str>) -> impl Iterator<Item = &str> {
    path.into_iter().flat_map(|p| p.split('/'))
}

/// Removes the value at `levels` (+ `hash`) under `node`, dropping each child left empty on the
/// way back up so that subscription churn cannot grow the tree.
fn remove_in<'f, V>(
    node: &mut Node<V>,
    mut levels: impl Iterator<Item = &'f str>,
    hash: bool,
) -> Option<V> {
    let Some(level) = levels.next() else {
        return if hash {
            node.hash.take()
        } else {
            node.value.take()
        };
    };
    if level == "+" {
        let plus = node.plus.as_deref_mut()?;
        let removed = remove_in(plus, levels, hash);
        if plus.is_empty() {
            node.plus = None;
        }
        return removed;
    }
    let child = node.children.get_mut(level)?;
    let removed = remove_in(child, levels, hash);
    if child.is_empty() {
        node.children.remove(level);
        // A node that once had many children (e.g. `devices/{id}/...` for a fleet that has
        // since gone) would otherwise keep its peak table size forever. Shrinking only at a
        // quarter full keeps the rehash cost amortised.
        let cap = node.children.capacity();
        if cap > 16 && node.children.len() * 4 < cap {
            node.children.shrink_to_fit();
        }
    }
    removed
}

impl<V> TopicTree<V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The value stored for exactly `filter` (a validated plain filter), created with `make` if absent.
    pub fn get_or_insert_with(&mut self, filter: &str, make: impl FnOnce() -> V) -> &mut V {
        let (path, hash) = split_filter(filter);
        let mut node = &mut self.root;
        for level in path_levels(path) {
            node = match level {
                "+" => node.plus.get_or_insert_with(|| Box::new(Node::new())),
                _ => node
                    .children
                    .entry(Box::from(level))
                    .or_insert_with(Node::new),
            };
        }
        let slot = if hash {
            &mut node.hash
        } else {
            &mut node.value
        };
        if slot.is_none() {
            self.len += 1;
        }
        slot.get_or_insert_with(make)
    }

    /// The value stored for exactly `filter`.
    pub fn get(&self, filter: &str) -> Option<&V> {
        let (path, hash) = split_filter(filter);
        let mut node = &self.root;
        for level in path_levels(path) {
            node = node.child(level)?;
        }
        if hash {
            node.hash.as_ref()
        } else {
            node.value.as_ref()
        }
    }

    /// The value stored for exactly `filter`.
    pub fn get_mut(&mut self, filter: &str) -> Option<&mut V> {
        let (path, hash) = split_filter(filter);
        let mut node = &mut self.root;
        for level in path_levels(path) {
            node = node.child_mut(level)?;
        }
        if hash {
            node.hash.as_mut()
        } else {
            node.value.as_mut()
        }
    }

    /// Removes and returns the value stored for exactly `filter`, pruning empty branches.
    pub fn remove(&mut self, filter: &str) -> Option<V> {
        let (path, hash) = split_filter(filter);
        let removed = remove_in(&mut self.root, path_levels(path), hash);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// Calls `visit` with the filter's value for every stored filter matching `topic`, once each.
    /// Filters starting with a wildcard do not match topics starting with `$` [MQTT-4.7.2-1].
    pub fn for_each_match(&self, topic: &str, mut visit: impl FnMut(&V)) {
        let mut levels = topic.split('/');
        if topic.starts_with('$') {
            // Skip the root's `#` and `+` slots: only a literal first level may match.
            if let Some(child) = levels
                .next()
                .and_then(|first| self.root.children.get(first))
            {
                child.walk(levels, &mut visit);
            }
        } else {
            self.root.walk(levels, &mut visit);
        }
    }

    /// Calls `f` with every stored filter and its value, in no particular order. The filter
    /// string is built in one reused buffer, so this allocates only as the longest filter grows.
    pub fn for_each(&self, mut f: impl FnMut(&str, &V)) {
        let mut path = String::new();
        self.root.for_each_in(&mut path, true, &mut f);
    }

    /// Number of stored filters.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_of(filters: &[&'static str]) -> TopicTree<&'static str> {
        let mut tree = TopicTree::new();
        for f in filters {
            tree.get_or_insert_with(f, || *f);
        }
        tree
    }

    fn matches(tree: &TopicTree<&'static str>, topic: &str) -> Vec<&'static str> {
        let mut out = Vec::new();
        tree.for_each_match(topic, |v| out.push(*v));
        out.sort_unstable();
        out
    }

    #[test]
    fn spec_examples() {
        // MQTT 5.0 §4.7.1.2 / §4.7.1.3 / §4.7.2.
        let tree = tree_of(&[
            "sport/tennis/player1/#",
            "sport/#",
            "#",
            "+",
            "+/+",
            "/+",
            "sport/+",
            "sport/+/player1",
            "+/tennis/#",
            "$SYS/#",
            "$SYS/monitor/+",
            "+/monitor/Clients",
        ]);
        assert_eq!(matches(&tree, "sport"), ["#", "+", "sport/#"]);
        assert_eq!(
            matches(&tree, "sport/tennis/player1"),
            [
                "#",
                "+/tennis/#",
                "sport/#",
                "sport/+/player1",
                "sport/tennis/player1/#"
            ]
        );
        assert_eq!(
            matches(&tree, "sport/tennis/player1/score/wimbledon"),
            ["#", "+/tennis/#", "sport/#", "sport/tennis/player1/#"]
        );
        assert_eq!(matches(&tree, "sport/"), ["#", "+/+", "sport/#", "sport/+"]);
        assert_eq!(matches(&tree, "/finance"), ["#", "+/+", "/+"]);
        assert_eq!(matches(&tree, "/"), ["#", "+/+", "/+"]);
        assert_eq!(matches(&tree, "$SYS"), ["$SYS/#"]);
        assert_eq!(
            matches(&tree, "$SYS/monitor/Clients"),
            ["$SYS/#", "$SYS/monitor/+"]
        );
        assert_eq!(matches(&tree, "$other/monitor/Clients"), Vec::<&str>::new());
        assert_eq!(
            matches(&tree, "x/monitor/Clients"),
            ["#", "+/monitor/Clients"]
        );
    }

    #[test]
    fn plus_matches_empty_levels() {
        let tree = tree_of(&["a/+/b", "+/+/+", "a/+"]);
        assert_eq!(matches(&tree, "a//b"), ["+/+/+", "a/+/b"]);
        assert_eq!(matches(&tree, "a/"), ["a/+"]);
        assert_eq!(matches(&tree, "//"), ["+/+/+"]);
        assert_eq!(matches(&tree, "a"), Vec::<&str>::new());
    }

    #[test]
    fn dollar_rule_only_applies_to_the_first_level() {
        let tree = tree_of(&["a/+", "a/#", "+/$x"]);
        assert_eq!(matches(&tree, "a/$b"), ["a/#", "a/+"]);
        assert_eq!(matches(&tree, "b/$x"), ["+/$x"]);
    }

    #[test]
    fn insert_get_remove() {
        let mut tree: TopicTree<u32> = TopicTree::new();
        assert!(tree.is_empty());
        *tree.get_or_insert_with("a/+/#", || 1) += 10;
        assert_eq!(*tree.get_or_insert_with("a/+/#", || 99), 11);
        tree.get_or_insert_with("a/+", || 2);
        tree.get_or_insert_with("#", || 3);
        assert_eq!(tree.len(), 3);
        assert_eq!(tree.get("a/+/#"), Some(&11));
        assert_eq!(tree.get("a/+"), Some(&2));
        assert_eq!(tree.get("a"), None);
        assert_eq!(tree.get("a/#"), None);
        if let Some(v) = tree.get_mut("#") {
            *v = 4;
        }
        assert_eq!(tree.get("#"), Some(&4));
        assert_eq!(tree.remove("a/x"), None);
        assert_eq!(tree.remove("a"), None);
        assert_eq!(tree.remove("a/+/#"), Some(11));
        assert_eq!(tree.remove("a/+/#"), None);
        assert_eq!(tree.len(), 2);
        assert_eq!(tree.remove("a/+"), Some(2));
        assert_eq!(tree.remove("#"), Some(4));
        assert!(tree.is_empty());
        assert!(
            tree.root.is_empty(),
            "branches were not pruned: {:?}",
            tree.root
        );
    }

    #[test]
    fn remove_keeps_siblings_and_prefixes() {
        let mut tree = tree_of(&["a", "a/b", "a/b/c", "a/+/c", "a/#"]);
        assert_eq!(tree.remove("a/b"), Some("a/b"));
        assert_eq!(matches(&tree, "a/b/c"), ["a/#", "a/+/c", "a/b/c"]);
        assert_eq!(tree.remove("a/b/c"), Some("a/b/c"));
        assert!(!tree.root.children["a"].children.contains_key("b"));
        assert_eq!(matches(&tree, "a"), ["a", "a/#"]);
    }

    #[test]
    fn churn_does_not_keep_peak_capacity() {
        let mut tree: TopicTree<()> = TopicTree::new();
        let filters: Vec<String> = (0..10_000)
            .map(|i| format!("devices/{i}/telemetry"))
            .collect();
        for f in &filters {
            tree.get_or_insert_with(f, || ());
        }
        for f in filters.iter().skip(1) {
            tree.remove(f);
        }
        assert_eq!(tree.len(), 1);
        assert!(tree.root.children["devices"].children.capacity() < 64);
    }

    #[test]
    fn for_each_reconstructs_filters() {
        let all = [
            "#", "+", "/", "//", "a", "a/#", "a/+/b", "+/+", "/a", "$SYS/#", "a//#",
        ];
        let tree = tree_of(&all);
        let mut seen = Vec::new();
        tree.for_each(|f, v| {
            assert_eq!(f, *v);
            seen.push(*v);
        });
        seen.sort_unstable();
        let mut want = all.to_vec();
        want.sort_unstable();
        assert_eq!(seen, want);
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<TopicTree<String>>();
    }
}
