//! What the session's stored record holds: its subscriptions, expiry, owner and will, and
//! whether (and how) it is journalled.

use bytestring::ByteString;

use crate::packet::LastWill;

use crate::broker::owner::Owner;
use crate::broker::store::encoding::StoredSession;

use super::durable::SessionDisk;
use super::{Session, SessionState, StoredSubscription};

impl Session {
    /// The journal, while the session is persistent (expiry above zero).
    pub(super) fn persistent<'a>(&'a self, state: &SessionState) -> Option<&'a SessionDisk> {
        self.disk.as_ref().filter(|_| state.expiry_interval > 0)
    }

    /// Journals the session's record, if it is persistent.
    pub(super) fn save_record(&self, state: &mut SessionState) {
        if let Some(disk) = self.persistent(state) {
            state.on_disk = true;
            disk.save(&StoredSession {
                expiry_interval: state.expiry_interval,
                disconnected_at_ms: state.disconnected_at_ms,
                subscriptions: state
                    .subscriptions
                    .iter()
                    .map(|(filter, sub)| (filter.to_string(), sub.options, sub.identifier))
                    .collect(),
                will: state.stored_will.clone(),
                owner: state.owner.clone(),
            });
        }
    }

    /// Applies a new expiry interval: a session that stops being persistent leaves the store.
    pub(super) fn change_expiry(&self, state: &mut SessionState, expiry_interval: u32) {
        let was_persistent = state.expiry_interval > 0;
        state.expiry_interval = expiry_interval;
        match (&self.disk, was_persistent, expiry_interval > 0) {
            (Some(disk), true, false) if state.on_disk => {
                disk.delete();
                state.on_disk = false;
            }
            (Some(_), _, true) => self.save_record(state),
            _ => {}
        }
    }

    /// Stores a subscription; returns the previous one for the same filter, if any.
    pub fn add_subscription(
        &self,
        filter: ByteString,
        sub: StoredSubscription,
    ) -> Option<StoredSubscription> {
        let mut state = self.lock();
        let previous = state.subscriptions.insert(filter, sub);
        self.save_record(&mut state);
        previous
    }

    pub fn remove_subscription(&self, filter: &str) -> Option<StoredSubscription> {
        let mut state = self.lock();
        let removed = state.subscriptions.remove(filter);
        if removed.is_some() {
            self.save_record(&mut state);
        }
        removed
    }

    /// The filters the session is subscribed with, as it names them (sorted).
    pub fn subscription_filters(&self) -> Vec<String> {
        let mut filters: Vec<String> = self
            .lock()
            .subscriptions
            .keys()
            .map(|f| f.to_string())
            .collect();
        filters.sort();
        filters
    }

    pub fn subscription_count(&self) -> usize {
        self.lock().subscriptions.len()
    }

    /// Whether one more subscription under `filter` stays within `max` (0: no bound); a
    /// filter the session holds already only replaces its subscription.
    pub fn has_room_for_subscription(&self, filter: &str, max: usize) -> bool {
        let state = self.lock();
        max == 0 || state.subscriptions.len() < max || state.subscriptions.contains_key(filter)
    }

    pub fn expiry_interval(&self) -> u32 {
        self.lock().expiry_interval
    }

    pub fn set_expiry_interval(&self, secs: u32) {
        let mut state = self.lock();
        self.change_expiry(&mut state, secs);
    }

    /// The username its will is published under: its owner's.
    pub fn username(&self) -> Option<ByteString> {
        self.lock().owner.username().cloned()
    }

    pub fn owner(&self) -> Owner {
        self.lock().owner.clone()
    }

    /// Takes the will, e.g. because the connection ended abnormally, or drops it on a normal
    /// DISCONNECT.
    pub fn take_will(&self) -> Option<LastWill> {
        self.lock().will.take()
    }

    /// The will was published or cancelled: a restart must not publish it.
    pub fn forget_will(&self) {
        let mut state = self.lock();
        if state.stored_will.take().is_some() {
            self.save_record(&mut state);
        }
    }
}
