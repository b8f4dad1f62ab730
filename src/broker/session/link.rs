//! The connection attached to a session: attach, takeover, detach, and the session's end
//! (what it gives back to its groups, what it resends), claims and kicks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use tokio::sync::{oneshot, Notify};

use crate::packet::{Ack, LastWill, Packet, ProtocolVersion, QoS, ReasonCode};

use crate::broker::delivery::{CopyTally, Delivery};
use crate::broker::owner::Owner;
use crate::broker::store::encoding::unix_now_ms;

use super::outbound::build_publish_unchecked;
use super::{Inflight, Link, OutboundStage, Session, SessionState, StoredSubscription};

/// What a connection needs to know about the link it just made.
#[derive(Debug)]
pub struct Attached {
    pub generation: u64,
    pub notify: Arc<Notify>,
    pub kicked: oneshot::Receiver<ReasonCode>,
    /// Unfinished outbound QoS 1/2 exchanges to resend on this connection, in order.
    pub resend: Vec<Packet>,
    /// Shared-subscription copies the previous connection left unfinished, to hand back to
    /// their groups.
    pub redispatch: Vec<Delivery>,
}

/// What a takeover leaves behind of the connection it replaced.
#[derive(Debug, Default)]
pub struct TakenOver {
    pub redispatch: Vec<Delivery>,
    pub previous_will: Option<LastWill>,
}

/// What an ended session leaves behind for the router to clean up.
#[derive(Debug)]
pub struct EndedSession {
    pub subscriptions: HashMap<ByteString, StoredSubscription>,
    pub redispatch: Vec<Delivery>,
}

impl Session {
    /// Detaches the connection currently attached, if any, telling it to go away with
    /// `kick_reason`. Returns its unfinished shared copies and its will. Called before a new
    /// connection attaches, so the copies go to other members while this one is offline.
    pub fn take_over(&self, kick_reason: ReasonCode) -> TakenOver {
        let mut state = self.lock();
        let mut taken = TakenOver::default();
        if let Some(mut old) = state.link.take() {
            if let Some(kick) = old.kick.take() {
                let _ = kick.send(kick_reason);
            }
            state.take_shared_unfinished(&mut taken.redispatch);
            taken.previous_will = state.will.take();
        }
        taken
    }

    /// Attaches a new connection. Any connection still attached is taken over first (see
    /// [`Session::take_over`]); its shared leftovers are returned in `Attached` (its will is
    /// dropped: callers that care take over explicitly first).
    pub fn attach(
        &self,
        version: ProtocolVersion,
        window: usize,
        max_packet_size: u32,
        will: Option<LastWill>,
        expiry_interval: u32,
    ) -> Attached {
        let taken = self.take_over(ReasonCode::SESSION_TAKEN_OVER);
        let mut state = self.lock();
        state.generation += 1;
        let generation = state.generation;
        let notify = Arc::new(Notify::new());
        let (kick, kicked) = oneshot::channel();
        state.link = Some(Link {
            generation,
            notify: notify.clone(),
            kick: Some(kick),
            version,
            window: window.max(1),
            max_packet_size,
        });
        state.stored_will = will.clone();
        state.will = will;
        state.disconnected_at_ms = None;
        self.change_expiry(&mut state, expiry_interval);
        let resend = state.resend_packets();
        Attached {
            generation,
            notify,
            kicked,
            resend,
            redispatch: taken.redispatch,
        }
    }

    /// Detaches connection `generation` if it is still the attached one. Returns the
    /// shared-subscription copies to hand back to their groups, or `None` if a newer connection
    /// already took over (that connection owns the session now).
    pub fn detach(&self, generation: u64) -> Option<Vec<Delivery>> {
        let mut state = self.lock();
        match &state.link {
            Some(link) if link.generation == generation => {}
            _ => return None,
        }
        state.link = None;
        state.disconnected_at_ms = Some(unix_now_ms());
        self.save_record(&mut state);
        let mut redispatch = Vec::new();
        state.take_shared_unfinished(&mut redispatch);
        Some(redispatch)
    }

    /// Marks the session ended and returns everything it held: its subscriptions (to remove
    /// from the router) and the shared copies still queued or in flight at QoS 1 (QoS 2 copies
    /// are dropped: they must never go to another member [MQTT-4.8.2-5]).
    pub fn end(&self) -> EndedSession {
        let mut state = self.lock();
        self.end_locked(&mut state)
    }

    pub(super) fn end_locked(&self, state: &mut SessionState) -> EndedSession {
        for entry in state.inflight.values() {
            if let (Some(tag), QoS::ExactlyOnce) = (&entry.delivery.group, entry.delivery.qos) {
                CopyTally::count(&tag.tally.ended_with_member);
                tag.resolved();
            }
        }
        // Shared QoS 2 copies in flight end with the session [MQTT-4.8.2-5].
        for entry in state.inflight.values() {
            if entry.delivery.group.is_some() && entry.delivery.qos == QoS::ExactlyOnce {
                if let Some(stored) = &entry.delivery.stored {
                    stored.finished();
                }
            }
        }
        if let (Some(disk), true) = (&self.disk, state.on_disk) {
            disk.delete();
        }
        state.end_now()
    }

    /// Ends the session only if connection `generation` was the last to hold it and nobody has
    /// attached or claimed it since (an expiry running out). The check and the end are one
    /// step under the session's lock, so a reconnect cannot slip between them and attach to a
    /// session that is being ended.
    pub fn end_if_idle_since(&self, generation: u64) -> Option<EndedSession> {
        let mut state = self.lock();
        if state.ended || state.link.is_some() || state.generation != generation {
            return None;
        }
        Some(self.end_locked(&mut state))
    }

    /// Marks a resumption by `claimant` under way, before its connection attaches: an expiry
    /// or a delayed will armed for an earlier connection sees a newer generation and stands
    /// down. False, and nothing changes, if `claimant` is not the session's owner; a session
    /// whose owner was not recorded becomes `claimant`'s (its record says so from the attach).
    pub fn claim(&self, claimant: &Owner) -> bool {
        let mut state = self.lock();
        if !state.owner.admits(claimant) {
            return false;
        }
        state.owner = claimant.clone();
        state.generation += 1;
        true
    }

    /// Whether `claimant` may resume or replace this session.
    pub fn admits(&self, claimant: &Owner) -> bool {
        self.lock().owner.admits(claimant)
    }

    /// Tells the attached connection, if any, to close with `reason`.
    pub fn kick(&self, reason: ReasonCode) {
        let mut state = self.lock();
        if let Some(kick) = state.link.as_mut().and_then(|l| l.kick.take()) {
            let _ = kick.send(reason);
        }
    }

    pub fn is_ended(&self) -> bool {
        self.lock().ended
    }

    pub fn is_online(&self) -> bool {
        self.lock().link.is_some()
    }

    pub fn generation(&self) -> u64 {
        self.lock().generation
    }
}

impl SessionState {
    pub(super) fn end_now(&mut self) -> EndedSession {
        self.ended = true;
        self.link = None;
        let mut redispatch = Vec::new();
        self.take_shared_unfinished(&mut redispatch);
        // Its rows go with the session's record (or it had none).
        self.queue.clear();
        self.inflight.clear();
        self.inflight_bytes = 0;
        self.incoming_qos2.clear();
        EndedSession {
            subscriptions: std::mem::take(&mut self.subscriptions),
            redispatch,
        }
    }

    /// True while connection `generation` is the attached one. Only it may acknowledge: a
    /// connection that was taken over can still be reading its socket, and its PUBACK names a
    /// packet id of its own exchange, which the new connection may have reused for another
    /// message (its shared copies went back to the group at the takeover). Completing that
    /// other message would take it out of flight unacknowledged, so a later failure of the new
    /// connection would not hand it back to the group: lost.
    pub(super) fn is_attached(&self, generation: u64) -> bool {
        self.link
            .as_ref()
            .is_some_and(|link| link.generation == generation)
    }

    /// Shared copies this session has not finished and that may go to another member: every
    /// queued one, and those in flight at QoS 1. QoS 2 in flight stays, to be completed with
    /// this same client [MQTT-4.8.2-4].
    pub(super) fn take_shared_unfinished(&mut self, out: &mut Vec<Delivery>) {
        // In-flight copies were sent before anything still queued, so they go back first.
        // Copies past their ack deadline are with another member already: forgotten here, so
        // that a resumed session does not send them again.
        let abandoned: Vec<u16> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.abandoned.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in abandoned {
            self.remove_inflight(id);
        }
        let mut in_flight: Vec<(u64, u16)> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.delivery.group.is_some() && f.delivery.qos == QoS::AtLeastOnce)
            .map(|(id, f)| (f.sequence, *id))
            .collect();
        in_flight.sort_unstable();
        for (_, id) in in_flight {
            if let Some(entry) = self.remove_inflight(id) {
                out.push(entry.delivery);
            }
        }
        out.extend(self.queue.take_if(|delivery| delivery.group.is_some()));
    }

    pub(super) fn resend_packets(&mut self) -> Vec<Packet> {
        let mut entries: Vec<(&u16, &Inflight)> = self.inflight.iter().collect();
        entries.sort_unstable_by_key(|(_, f)| f.sequence);
        let now = Instant::now();
        let mut packets = Vec::with_capacity(entries.len());
        for (id, entry) in entries {
            match entry.stage {
                OutboundStage::Published => {
                    // A message already in flight is finished even if it expired meanwhile (the
                    // client may hold the first copy); it then goes without an expiry property.
                    let mut publish = build_publish_unchecked(&entry.delivery, Some(*id), true);
                    publish.properties.message_expiry_interval =
                        entry.delivery.message.remaining_expiry(now).unwrap_or(None);
                    packets.push(Packet::Publish(publish));
                }
                OutboundStage::Released => packets.push(Packet::PubRel(Ack::new(*id))),
            }
        }
        packets
    }
}
