//! What happened to shared groups, as it happens: members joining and leaving, copies going
//! back to a group, strategies swapped or given up on. The dashboard's event feed reads it; a
//! slow reader misses events rather than slowing the broker.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::broadcast;

/// Events kept for a page that opens now.
const RECENT: usize = 100;
/// Events a live reader may lag behind before it misses some.
const CHANNEL: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    GroupCreated,
    GroupEnded,
    MemberJoined,
    MemberLeft,
    /// Copies a member could not finish went back to the group (`count`, `reason`).
    Redispatched,
    StrategySwapped,
    /// The strategy kept failing: the native round robin serves until the next reload.
    Pinned,
    Purged,
    Declared,
    Undeclared,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Wall-clock milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub kind: EventKind,
    pub group: String,
    pub filter: String,
    /// What it is about: a client id, a strategy, a count and reason.
    pub detail: String,
}

/// The feed: a broadcast to live readers, and the last [`RECENT`] events for new ones.
#[derive(Debug, Clone)]
pub struct EventFeed {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    live: broadcast::Sender<Arc<Event>>,
    /// A leaf lock: held to push or copy, nothing called under it.
    recent: Mutex<VecDeque<Arc<Event>>>,
}

impl Default for EventFeed {
    fn default() -> Self {
        EventFeed {
            inner: Arc::new(Inner {
                live: broadcast::channel(CHANNEL).0,
                recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            }),
        }
    }
}

impl EventFeed {
    pub fn emit(&self, kind: EventKind, group: &str, filter: &str, detail: impl Into<String>) {
        let event = Arc::new(Event {
            at_ms: crate::clock::unix_now_ms(),
            kind,
            group: group.to_owned(),
            filter: filter.to_owned(),
            detail: detail.into(),
        });
        {
            let mut recent = self.inner.recent.lock();
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        // No reader is not an error.
        let _ = self.inner.live.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.live.subscribe()
    }

    /// The latest events, oldest first.
    pub fn recent(&self) -> Vec<Arc<Event>> {
        self.inner.recent.lock().iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_events_and_broadcasts_new_ones() {
        let feed = EventFeed::default();
        let mut live = feed.subscribe();
        for i in 0..(RECENT + 5) {
            feed.emit(EventKind::MemberJoined, "g", "f/#", format!("c{i}"));
        }
        let recent = feed.recent();
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent[0].detail, "c5");
        assert_eq!(
            live.try_recv().map(|e| e.detail.clone()).ok(),
            Some("c0".into())
        );
    }
}
