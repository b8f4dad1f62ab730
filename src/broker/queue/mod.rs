//! One durable queue: what a session's own queue and a shared group's queue both are. A
//! bounded window of the oldest items in memory, the rest (with a store) waiting as rows of the
//! queue's [`QueueStore`], read back when the window runs low. Count and byte bounds cover both
//! parts.
//!
//! The queue keeps no policy: a session drops its oldest QoS 0 message when full, a group
//! overflows, compacts and ages its messages; both call the queue for storage. The queue is not
//! locked on its own: it lives inside its owner's state, under the owner's lock (a session's or
//! a group's), which is what keeps one row's store operations in order.

pub mod spill;

use std::collections::VecDeque;
use std::sync::Arc;

use crate::broker::message::Message;
use crate::broker::store::encoding::{decode_entry, entry_weight, Clock, CopyFields, StoredEntry};
use crate::broker::store::journal::RefillResult;
use crate::broker::store::QueueStore;
pub use spill::Spill;

/// What a durable queue holds: anything that knows its whole-message weight.
pub trait QueueItem {
    fn weight(&self) -> usize;
}

impl QueueItem for crate::broker::delivery::Delivery {
    fn weight(&self) -> usize {
        self.message.weight()
    }
}

/// Which of a queue's bounds a new item would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Messages,
    Bytes,
}

/// Rows read back that the queue's owner makes items of: `None` skips a row (it is not one of
/// the owner's items), leaving it counted on disk.
pub type MakeItem<'a, T> = dyn FnMut(u64, StoredEntry, &Arc<dyn QueueStore>) -> Option<T> + 'a;

#[derive(Debug)]
pub struct DurableQueue<T> {
    /// The memory window, oldest first.
    items: VecDeque<T>,
    /// Whole-message bytes of `items`.
    bytes: usize,
    /// The part that waits in the store only.
    spill: Spill,
    /// Where the queue's rows are kept; none when the broker keeps no store.
    store: Option<Arc<dyn QueueStore>>,
}

impl<T: QueueItem> DurableQueue<T> {
    pub fn new(store: Option<Arc<dyn QueueStore>>) -> DurableQueue<T> {
        DurableQueue {
            items: VecDeque::new(),
            bytes: 0,
            spill: Spill::default(),
            store,
        }
    }

    pub fn store(&self) -> Option<&Arc<dyn QueueStore>> {
        self.store.as_ref()
    }

    /// Items in the memory window.
    pub fn in_memory(&self) -> usize {
        self.items.len()
    }

    /// Items waiting, in memory and in the store.
    pub fn count(&self) -> usize {
        self.items.len() + self.spill.count
    }

    /// Nothing waits, in memory or in the store.
    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// Rows waiting in the store only.
    pub fn on_disk(&self) -> usize {
        self.spill.count
    }

    /// Whole-message bytes waiting, in memory and in the store.
    pub fn bytes(&self) -> usize {
        self.bytes + self.spill.bytes
    }

    /// Which bound one more item of `weight` would break, counting `held_elsewhere` bytes the
    /// owner holds outside the queue (a session's messages in flight).
    pub fn full(
        &self,
        weight: usize,
        held_elsewhere: usize,
        max_messages: usize,
        max_bytes: usize,
    ) -> Option<Bound> {
        if self.count() >= max_messages {
            Some(Bound::Messages)
        } else if self.bytes() + held_elsewhere + weight > max_bytes {
            Some(Bound::Bytes)
        } else {
            None
        }
    }

    pub fn front(&self) -> Option<&T> {
        self.items.front()
    }

    pub fn get(&self, index: usize) -> Option<&T> {
        self.items.get(index)
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }

    /// Stores a message arriving at the queue; its copy id, or none without a store.
    pub fn append(&self, message: &Message, copy: Option<&CopyFields>) -> Option<u64> {
        self.store.as_ref().map(|store| store.append(message, copy))
    }

    /// Row `stored` of this queue is done with (given up on, dropped).
    pub fn finished(&self, stored: Option<u64>) {
        if let (Some(store), Some(id)) = (&self.store, stored) {
            store.finished(id);
        }
    }

    /// Adds an item at the tail. `stored` is its row in this queue's store, if it has one: past
    /// the memory window (or behind rows already waiting there, to keep the order), such an
    /// item waits in the store only. True if it joined the memory window.
    pub fn push_back(&mut self, item: T, stored: Option<u64>) -> bool {
        let weight = item.weight();
        if let (Some(store), Some(id)) = (&self.store, stored) {
            if self
                .spill
                .must_spill(self.items.len(), self.bytes, &store.window())
            {
                self.spill.push(id, weight);
                return false;
            }
        }
        self.bytes += weight;
        self.items.push_back(item);
        true
    }

    /// Puts an item back at the head (it is older than everything waiting).
    pub fn push_front(&mut self, item: T) {
        self.bytes += item.weight();
        self.items.push_front(item);
    }

    pub fn pop_front(&mut self) -> Option<T> {
        let item = self.items.pop_front()?;
        self.bytes -= item.weight();
        Some(item)
    }

    pub fn remove(&mut self, index: usize) -> Option<T> {
        let item = self.items.remove(index)?;
        self.bytes -= item.weight();
        Some(item)
    }

    /// Takes the items of the memory window that `take` picks, in order; the rest stay in order.
    pub fn take_if(&mut self, mut take: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(self.items.len());
        for item in self.items.drain(..) {
            if take(&item) {
                self.bytes -= item.weight();
                taken.push(item);
            } else {
                kept.push_back(item);
            }
        }
        self.items = kept;
        taken
    }

    /// Empties the memory window and forgets the disk tail, leaving the store's rows to
    /// whoever deletes them with their owner (a session's record takes its rows with it).
    pub fn clear(&mut self) -> VecDeque<T> {
        self.bytes = 0;
        self.spill.clear();
        std::mem::take(&mut self.items)
    }

    /// Drops everything waiting: the memory window is returned (for the owner to finish its
    /// items' rows), and the disk tail's rows leave the store. Returns how many waited.
    pub fn purge(&mut self) -> (VecDeque<T>, usize) {
        let count = self.count();
        if self.spill.count > 0 {
            // The disk tail is not in memory to name row by row: the queue's rows from its
            // first id go (copies members hold are older, so they stay).
            if let Some(store) = &self.store {
                store.purge_from(self.spill.next_id);
            }
        }
        (self.clear(), count)
    }

    /// The queue ended: everything waiting, and every row it has, goes. Returns how many waited.
    pub fn drop_all(&mut self) -> usize {
        let count = self.count();
        self.clear();
        if let Some(store) = &self.store {
            store.drop_all();
        }
        count
    }

    /// Rebuilds the queue read back at start: its memory window in order, and what waits in
    /// the store after it.
    pub fn restore(&mut self, window: impl IntoIterator<Item = T>, spill: Spill) {
        for item in window {
            self.push_back_in_memory(item);
        }
        self.spill = spill;
    }

    fn push_back_in_memory(&mut self, item: T) {
        self.bytes += item.weight();
        self.items.push_back(item);
    }

    /// Asks the store for the next rows when the memory window has run low and rows wait
    /// there; `done` (made only then) receives them on the store's thread.
    pub fn maybe_refill(&mut self, done: impl FnOnce() -> Box<dyn FnOnce(RefillResult) + Send>) {
        let Some(store) = &self.store else { return };
        let window = store.window();
        if !self.spill.wants_refill(self.items.len(), &window) {
            return;
        }
        let limit = self.spill.refill_limit(self.items.len(), &window);
        store.refill(self.spill.next_id, limit, done());
    }

    /// A refill could not be read: the next drain asks again.
    pub fn refill_failed(&mut self) {
        self.spill.refilling = false;
    }

    /// Rows of the disk tail read back: `make` turns each into an item, which joins the memory
    /// window in order. A damaged row is set aside in the store and taken out of the tail's
    /// count, so it is neither delivered nor waited for.
    pub fn refilled(&mut self, rows: Vec<(u64, Vec<u8>)>, make: &mut MakeItem<'_, T>) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let clock = Clock::now();
        let read = rows.len();
        for (id, value) in rows {
            match decode_entry(&value, clock) {
                Ok(entry) => {
                    let weight = entry.message.weight();
                    let Some(item) = make(id, entry, &store) else {
                        continue;
                    };
                    if self.spill.take_row(id, weight) {
                        self.push_back_in_memory(item);
                    }
                }
                Err(e) => {
                    let weight = entry_weight(&value).map_or(0, |w| w as usize);
                    if self.spill.take_row(id, weight) {
                        store.damaged(id, &e);
                    }
                }
            }
        }
        self.spill.refill_done(read);
    }
}

impl<T> Default for DurableQueue<T> {
    fn default() -> DurableQueue<T> {
        DurableQueue {
            items: VecDeque::new(),
            bytes: 0,
            spill: Spill::default(),
            store: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;
    use bytestring::ByteString;

    use super::*;
    use crate::broker::store::encoding::{Corrupt, StoredInflight};
    use crate::broker::store::queue_store::row_of;
    use crate::broker::store::QueueWindow;
    use crate::packet::QoS;

    /// A queue storage that hands out ids in order and records what the queue asks of it.
    #[derive(Debug, Default)]
    struct FakeStore {
        next_id: Mutex<u64>,
        calls: Mutex<Vec<String>>,
    }

    impl QueueStore for FakeStore {
        fn name(&self) -> &str {
            "g:fake/t"
        }
        fn append(&self, _message: &Message, _copy: Option<&CopyFields>) -> u64 {
            let mut next = self.next_id.lock().unwrap();
            *next += 1;
            *next
        }
        fn sent(&self, id: u64, _inflight: &StoredInflight) {
            self.calls.lock().unwrap().push(format!("sent {id}"));
        }
        fn finished(&self, id: u64) {
            self.calls.lock().unwrap().push(format!("finished {id}"));
        }
        fn refill(&self, from: u64, limit: usize, _done: Box<dyn FnOnce(RefillResult) + Send>) {
            self.calls
                .lock()
                .unwrap()
                .push(format!("refill from {from} limit {limit}"));
        }
        fn purge_from(&self, from: u64) {
            self.calls
                .lock()
                .unwrap()
                .push(format!("purge from {from}"));
        }
        fn drop_all(&self) {
            self.calls.lock().unwrap().push("drop all".into());
        }
        fn damaged(&self, id: u64, _error: &Corrupt) {
            self.calls.lock().unwrap().push(format!("damaged {id}"));
        }
        fn window(&self) -> QueueWindow {
            QueueWindow {
                messages: 4,
                bytes: 1 << 20,
            }
        }
    }

    #[derive(Debug, Clone)]
    struct Item {
        message: Arc<Message>,
        id: Option<u64>,
    }

    impl QueueItem for Item {
        fn weight(&self) -> usize {
            self.message.weight()
        }
    }

    fn message(payload: &'static [u8]) -> Arc<Message> {
        Message::internal(
            ByteString::from("t"),
            Bytes::from_static(payload),
            QoS::AtLeastOnce,
            false,
        )
    }

    /// Appends and queues one message, as a group does under its lock.
    fn arrive(queue: &mut DurableQueue<Item>, payload: &'static [u8]) -> bool {
        let message = message(payload);
        let id = queue.append(&message, None);
        queue.push_back(Item { message, id }, id)
    }

    #[test]
    fn past_the_window_rows_wait_in_the_store_and_count_against_the_bounds() {
        let store = Arc::new(FakeStore::default());
        let mut queue = DurableQueue::new(Some(store.clone() as Arc<dyn QueueStore>));
        for payload in [&b"1"[..], b"2", b"3", b"4"] {
            assert!(arrive(&mut queue, payload), "within the window");
        }
        assert!(!arrive(&mut queue, b"5"), "window full: on disk only");
        assert_eq!(
            (queue.in_memory(), queue.on_disk(), queue.count()),
            (4, 1, 5)
        );
        let weight = message(b"x").weight();
        assert_eq!(queue.bytes(), 5 * weight);
        assert_eq!(queue.full(weight, 0, 5, usize::MAX), Some(Bound::Messages));
        assert_eq!(queue.full(weight, 0, 6, 6 * weight - 1), Some(Bound::Bytes));
        assert_eq!(queue.full(weight, 0, 6, 6 * weight), None);

        // Room in memory again, but the tail is on disk: order keeps the next one there too.
        queue.pop_front();
        assert!(!arrive(&mut queue, b"6"));
        queue.pop_front();
        queue.maybe_refill(|| Box::new(|_| {}));
        assert_eq!(
            store.calls.lock().unwrap().as_slice(),
            ["refill from 5 limit 2"],
            "the tail starts at the first id that went to disk"
        );
        queue.maybe_refill(|| Box::new(|_| {}));
        assert_eq!(
            store.calls.lock().unwrap().len(),
            1,
            "one request at a time"
        );
    }

    #[test]
    fn a_refill_joins_the_window_in_order_and_sets_damaged_rows_aside() {
        let store = Arc::new(FakeStore::default());
        let mut queue = DurableQueue::new(Some(store.clone() as Arc<dyn QueueStore>));
        for _ in 0..4 {
            arrive(&mut queue, b"m");
        }
        for payload in [&b"5"[..], b"6", b"7"] {
            assert!(!arrive(&mut queue, payload));
        }
        while queue.pop_front().is_some() {}
        queue.maybe_refill(|| Box::new(|_| {}));
        let rows = vec![
            (5, row_of(&message(b"5"), None)),
            (6, b"not a row".to_vec()),
            (7, row_of(&message(b"7"), None)),
        ];
        queue.refilled(rows, &mut |id, entry, _| {
            Some(Item {
                message: entry.message,
                id: Some(id),
            })
        });
        let ids: Vec<Option<u64>> = queue.iter().map(|item| item.id).collect();
        assert_eq!(ids, vec![Some(5), Some(7)]);
        assert_eq!((queue.on_disk(), queue.count()), (0, 2));
        assert!(store
            .calls
            .lock()
            .unwrap()
            .contains(&"damaged 6".to_owned()));
    }

    #[test]
    fn purge_drops_the_disk_tail_from_its_first_id_and_an_end_drops_everything() {
        let store = Arc::new(FakeStore::default());
        let mut queue = DurableQueue::new(Some(store.clone() as Arc<dyn QueueStore>));
        for _ in 0..6 {
            arrive(&mut queue, b"m");
        }
        let (window, count) = queue.purge();
        assert_eq!((window.len(), count), (4, 6));
        assert!(queue.is_empty());
        assert_eq!(queue.bytes(), 0);
        assert_eq!(queue.drop_all(), 0);
        assert_eq!(
            store.calls.lock().unwrap().as_slice(),
            ["purge from 5", "drop all"]
        );
    }
}
