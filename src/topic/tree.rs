//! STUB, see mod.rs.

/// A subscription tree keyed by topic-filter level. Each filter owns one value `V` (the broker
/// keeps its subscribers and shared groups there).
#[derive(Debug)]
pub struct TopicTree<V> {
    root: Option<V>,
}

impl<V> Default for TopicTree<V> {
    fn default() -> Self {
        TopicTree { root: None }
    }
}

impl<V> TopicTree<V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The value stored for exactly `filter` (a validated plain filter), created with `make` if absent.
    pub fn get_or_insert_with(&mut self, filter: &str, make: impl FnOnce() -> V) -> &mut V {
        let _ = (filter, make);
        unimplemented!()
    }

    /// The value stored for exactly `filter`.
    pub fn get_mut(&mut self, filter: &str) -> Option<&mut V> {
        let _ = filter;
        unimplemented!()
    }

    /// Removes and returns the value stored for exactly `filter`, pruning empty branches.
    pub fn remove(&mut self, filter: &str) -> Option<V> {
        let _ = filter;
        unimplemented!()
    }

    /// Calls `visit` with the filter's value for every stored filter matching `topic`, once each.
    /// Filters starting with a wildcard do not match topics starting with `$` [MQTT-4.7.2-1].
    pub fn for_each_match(&self, topic: &str, mut visit: impl FnMut(&V)) {
        let _ = (topic, &mut visit);
        unimplemented!()
    }

    /// Number of stored filters.
    pub fn len(&self) -> usize {
        unimplemented!()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
