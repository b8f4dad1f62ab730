//! What a group's queue holds, and what leaves it other than to a member: a message with the
//! record of its failed deliveries, and a message given up on, bound for the dead-letter topic.

use std::sync::Arc;

use bytestring::ByteString;

use crate::broker::message::Message;

/// A message in the group's queue, where it is stored, and how its deliveries went.
#[derive(Debug, Clone)]
pub struct Queued {
    pub message: Arc<Message>,
    /// Its copy id in the store (QoS 1/2 with a store).
    pub stored: Option<u64>,
    /// Deliveries that failed so far: the member disconnected, or missed the ack deadline.
    pub failures: u32,
    /// The last failure, for a dead-lettered copy's properties.
    pub last_failure: Option<Failure>,
    /// Its `ordered_by` key, computed once on arrival.
    pub key: Option<u64>,
}

impl Queued {
    /// A message arriving at the group (or read back from the store).
    pub fn new(message: Arc<Message>, stored: Option<u64>, key: Option<u64>) -> Queued {
        Queued {
            message,
            stored,
            failures: 0,
            last_failure: None,
            key,
        }
    }
}

/// Why and with whom a delivery failed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// `disconnect`, `ack_timeout`, or `rejected 0x..` (a PUBACK/PUBREC failure code).
    pub reason: String,
    pub member: ByteString,
}

/// A message the group gives up on: published to its dead-letter topic with the record of its
/// deliveries.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message: Arc<Message>,
    pub topic: String,
    pub group: ByteString,
    pub deliveries: u32,
    pub failure: Failure,
}

impl crate::broker::queue::QueueItem for Queued {
    fn weight(&self) -> usize {
        self.message.weight()
    }
}
