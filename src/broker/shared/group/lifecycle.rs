//! A group's life: declared or not, lingering without members, and its end, which drops its
//! queue.

use crate::broker::events::EventKind;
use crate::broker::shared::counters::GroupDrop;

use super::{GroupState, SharedGroup};

impl SharedGroup {
    /// Ends the group if it has lingered without members since `epoch` (and was not declared
    /// meanwhile); true if it ended.
    pub fn end_if_lingering(&self, epoch: u64) -> bool {
        let mut state = self.state.lock();
        if state.ended || state.declared || !state.members.is_empty() || state.epoch != epoch {
            return false;
        }
        self.end_locked(&mut state);
        true
    }

    /// Makes the group declared: it stays without members.
    pub fn declare(&self) {
        let mut state = self.state.lock();
        // Voids the timer of a lingering group: it no longer ends with its members.
        state.epoch += 1;
        state.declared = true;
    }

    /// Makes the group an ordinary one again; `None` if it was not declared. With no member it
    /// ends at once (`Some(true)`): an undeclared group exists only for its members.
    pub fn undeclare(&self) -> Option<bool> {
        let mut state = self.state.lock();
        if !state.declared {
            return None;
        }
        state.declared = false;
        if !state.members.is_empty() {
            return Some(false);
        }
        self.end_locked(&mut state);
        Some(true)
    }

    /// Starts a memberless, undeclared group's linger (one the store gave back at start); its
    /// epoch for the timer, or none if it has members or is declared.
    pub fn begin_lingering(&self) -> Option<u64> {
        let mut state = self.state.lock();
        if state.ended || state.declared || !state.members.is_empty() {
            return None;
        }
        state.epoch += 1;
        Some(state.epoch)
    }

    pub fn is_declared(&self) -> bool {
        self.state.lock().declared
    }

    /// Marks the group ended and drops (and counts) what its queue holds.
    pub(super) fn end_locked(&self, state: &mut GroupState) {
        state.ended = true;
        let dropped = state.queue.drop_all() as u64;
        self.publish_queued(state);
        self.counters.record_drop(GroupDrop::GroupEnded, dropped);
        self.events
            .emit(EventKind::GroupEnded, &self.name, &self.filter, "");
    }
}
