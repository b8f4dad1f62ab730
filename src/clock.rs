//! The wall clock in the form the broker records it: milliseconds since the Unix epoch. Below
//! every other module, so the event feed, the store and the HTTP side read one clock without
//! importing each other.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch; 0 for a clock set before 1970.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
