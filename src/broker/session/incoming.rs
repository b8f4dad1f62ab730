//! Inbound QoS 2: PUBLISHes received and acknowledged with PUBREC, waiting for their PUBREL.

use super::Session;

impl Session {
    /// Records an inbound QoS 2 PUBLISH; false if `packet_id` was already pending (a resend
    /// the broker must acknowledge again without routing it twice).
    pub fn begin_incoming_qos2(&self, packet_id: u16) -> bool {
        let mut state = self.lock();
        let new = state.incoming_qos2.insert(packet_id);
        if let (true, Some(disk)) = (new, self.persistent(&state)) {
            disk.incoming(packet_id, true);
        }
        new
    }

    pub fn incoming_qos2_pending(&self) -> usize {
        self.lock().incoming_qos2.len()
    }

    pub fn is_incoming_qos2_pending(&self, packet_id: u16) -> bool {
        self.lock().incoming_qos2.contains(&packet_id)
    }

    /// Handles PUBREL: true if `packet_id` was pending.
    pub fn release_incoming_qos2(&self, packet_id: u16) -> bool {
        let mut state = self.lock();
        let was = state.incoming_qos2.remove(&packet_id);
        if let (true, Some(disk)) = (was, self.persistent(&state)) {
            disk.incoming(packet_id, false);
        }
        was
    }
}
