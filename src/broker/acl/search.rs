//! Whether some topic is matched by every filter of one set and by none of another: the
//! question behind refusing a subscription only when nothing it can match is readable.

use std::collections::HashSet;

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
pub(super) fn some_topic(all: &[&str], none: &[&str]) -> bool {
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
