//! The part of a queue that waits on disk. A durable queue keeps a bounded window of its
//! oldest messages in memory; once the window is full, newer messages are only written to the
//! store, and this counts them. Because copy ids grow in arrival order, the disk part is always
//! the queue's tail: every stored row of the queue from `next_id` on.

use crate::broker::store::QueueWindow;

#[derive(Debug, Default, Clone, Copy)]
pub struct Spill {
    /// Messages of the queue that are on disk only.
    pub count: usize,
    /// Their whole-message bytes: the queue's byte bound counts them as if they were in memory.
    pub bytes: usize,
    /// The copy id the disk part starts at.
    pub next_id: u64,
    /// A refill was requested and has not arrived yet.
    pub refilling: bool,
}

impl Spill {
    /// Whether a new durable copy goes to disk only: the window is full, or older copies are
    /// already waiting there (the queue's order is kept).
    pub fn must_spill(
        &self,
        in_memory: usize,
        bytes_in_memory: usize,
        window: &QueueWindow,
    ) -> bool {
        self.count > 0 || in_memory >= window.messages || bytes_in_memory >= window.bytes
    }

    pub fn push(&mut self, id: u64, weight: usize) {
        if self.count == 0 {
            self.next_id = id;
        }
        self.count += 1;
        self.bytes += weight;
    }

    /// True when the memory window has run down to half and rows wait on disk: the caller asks
    /// the journal for the next ones (and marks the request under way).
    pub fn wants_refill(&mut self, in_memory: usize, window: &QueueWindow) -> bool {
        let wanted = self.count > 0 && !self.refilling && in_memory <= window.messages / 2;
        if wanted {
            self.refilling = true;
        }
        wanted
    }

    /// How many rows to ask for: enough to fill the window again.
    pub fn refill_limit(&self, in_memory: usize, window: &QueueWindow) -> usize {
        window
            .messages
            .saturating_sub(in_memory)
            .clamp(1, self.count.max(1))
    }

    /// Accounts one row read back; false if it is not part of the disk tail (already taken).
    pub fn take_row(&mut self, id: u64, weight: usize) -> bool {
        if self.count == 0 || id < self.next_id {
            return false;
        }
        self.count -= 1;
        self.bytes = self.bytes.saturating_sub(weight);
        self.next_id = id + 1;
        true
    }

    /// A refill arrived. Rows that were counted but are gone (the store lost them, or they
    /// were deleted with their queue) are forgotten rather than waited for forever.
    pub fn refill_done(&mut self, rows_read: usize) {
        self.refilling = false;
        if rows_read == 0 {
            if self.count > 0 {
                tracing::warn!(
                    missing = self.count,
                    "store: queue rows counted on disk were not found"
                );
            }
            *self = Spill::default();
        }
    }

    /// Everything on disk is dropped with its queue.
    pub fn clear(&mut self) {
        *self = Spill::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: QueueWindow = QueueWindow {
        messages: 4,
        bytes: 1000,
    };

    #[test]
    fn spills_when_the_window_is_full_and_keeps_spilling_while_the_tail_is_on_disk() {
        let mut spill = Spill::default();
        assert!(!spill.must_spill(3, 10, &SETTINGS));
        assert!(spill.must_spill(4, 10, &SETTINGS));
        assert!(spill.must_spill(0, 1000, &SETTINGS));
        spill.push(10, 5);
        spill.push(11, 5);
        assert!(
            spill.must_spill(0, 0, &SETTINGS),
            "order: the tail is on disk"
        );
        assert!(!spill.wants_refill(3, &SETTINGS));
        assert!(spill.wants_refill(2, &SETTINGS));
        assert!(!spill.wants_refill(0, &SETTINGS), "one request at a time");
        assert_eq!(spill.refill_limit(2, &SETTINGS), 2);
        assert!(!spill.take_row(9, 5), "not part of the tail");
        assert!(spill.take_row(10, 5));
        assert!(!spill.take_row(10, 5), "taken twice");
        spill.refill_done(1);
        assert_eq!((spill.count, spill.bytes, spill.next_id), (1, 5, 11));
        spill.refill_done(0);
        assert_eq!(spill.count, 0);
    }
}
