//! Start-up from the store: everything a previous run left is put back before the listeners
//! open — retained messages, persistent sessions (offline, with their subscriptions, queues,
//! exchanges in flight and wills) and group queues. Only each queue's memory window is read;
//! the rest stays on disk, counted, until the queue drains.
//!
//! Time kept in the store is wall-clock: a session's expiry, a delayed will and a message's
//! expiry count the time the broker was down. A session whose connection the broker's end cut
//! is taken to have gone offline at the store's last commit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;

use crate::packet::QoS;
use crate::topic::{parse_subscription_with, session_key, SubscriptionFilter};

use crate::broker::acl;
use crate::broker::delivery::{Delivery, GroupOrigin, GroupTag};
use crate::broker::queue::Spill;
use crate::broker::session::{self, Restored, Session};
use crate::broker::shared::group::Queued;
use crate::broker::store::encoding::{
    decode_entry, decode_inflight, decode_retained, decode_session, entry_weight, Clock, Corrupt,
    StoredInflight,
};
use crate::broker::store::{
    parse_group_owner, session_owner, JournalQueue, Persistence, QueueStats, QueueStore,
    RecordKind, Recovered, StoreError, StoredRef,
};
use crate::broker::will;
use crate::broker::BrokerState;

/// What recovery found, for its log line.
#[derive(Debug, Default)]
struct Counts {
    sessions: usize,
    expired_sessions: usize,
    queued: u64,
    retained: usize,
    groups: usize,
    skipped: usize,
}

/// A queue's stored entry that fails its checks: the journal moves it aside and logs it, and it
/// stays in the queue's held counts, which the rows it was counted in still include.
fn set_aside_damaged(
    persistence: &Persistence,
    counts: &mut Counts,
    held: &mut QueueStats,
    owner: &str,
    id: u64,
    value: &[u8],
    error: &Corrupt,
) {
    counts.skipped += 1;
    held.count += 1;
    held.bytes += entry_weight(value).map_or(0, u64::from);
    persistence.record_damaged(RecordKind::Entry, owner, id, error);
}

/// A session put back, waiting for its queue.
struct Pending {
    session: Arc<Session>,
    restored: Restored,
}

impl BrokerState {
    /// Puts back what the store holds. Runs before any listener opens.
    pub(crate) fn recover(self: &Arc<Self>, recovered: Recovered) -> Result<(), StoreError> {
        let Some(journal) = self.journal.clone() else {
            return Ok(());
        };
        let backend = journal.backend().clone();
        let persistence = Persistence::new(journal.clone());
        let started = Instant::now();
        let clock = Clock::now();
        let window = journal.settings.window_messages;
        let mut counts = Counts::default();

        for (topic, value) in recovered.retained {
            match decode_retained(&value, clock) {
                Ok(message) if message.is_expired(clock.instant) => {
                    persistence.retained_cleared(&topic);
                }
                Ok(message) => {
                    self.retained.restore(message);
                    counts.retained += 1;
                }
                Err(e) => {
                    counts.skipped += 1;
                    persistence.record_damaged(RecordKind::Retained, &topic, 0, &e);
                }
            }
        }

        let mut inflight_by_owner: HashMap<String, Vec<(u64, StoredInflight)>> = HashMap::new();
        for (owner, id, value) in recovered.inflight {
            match decode_inflight(&value) {
                Ok(record) => inflight_by_owner
                    .entry(owner)
                    .or_default()
                    .push((id, record)),
                Err(e) => {
                    counts.skipped += 1;
                    persistence.record_damaged(RecordKind::Inflight, &owner, id, &e);
                }
            }
        }
        let mut incoming_by_client: HashMap<String, Vec<u16>> = HashMap::new();
        for (client_id, packet_id) in recovered.incoming {
            incoming_by_client
                .entry(client_id)
                .or_default()
                .push(packet_id);
        }
        let stats: HashMap<String, QueueStats> = recovered.queues.into_iter().collect();

        // Sessions first, with their subscriptions: that makes the groups their members join.
        let mut sessions: HashMap<String, Pending> = HashMap::new();
        // Published (or timed) once every queue is back, so a will lands behind what waited.
        let mut wills = Vec::new();
        for (client_id, value) in recovered.sessions {
            let record = match decode_session(&value) {
                Ok(record) => record,
                Err(e) => {
                    counts.skipped += 1;
                    persistence.record_damaged(RecordKind::Session, &client_id, 0, &e);
                    continue;
                }
            };
            let offline_since = record
                .disconnected_at_ms
                .unwrap_or(recovered.last_commit_ms);
            let offline_secs = clock.unix_ms.saturating_sub(offline_since) / 1000;
            let remaining = if record.expiry_interval == u32::MAX {
                u32::MAX
            } else {
                let left = u64::from(record.expiry_interval).saturating_sub(offline_secs);
                if left == 0 {
                    counts.expired_sessions += 1;
                    persistence.session_deleted(&Arc::from(client_id.as_str()));
                    continue;
                }
                u32::try_from(left).unwrap_or(u32::MAX)
            };
            let id = ByteString::from(client_id.as_str());
            let session = self.restore_session(&id, record.owner.clone(), record.expiry_interval);
            session.restore_record(record.will.clone(), offline_since);
            self.restore_subscriptions(&session, record.subscriptions);
            let restored = Restored {
                incoming_qos2: incoming_by_client.remove(&client_id).unwrap_or_default(),
                ..Restored::default()
            };
            if let Some(last_will) = record.will {
                let delay = last_will.properties.will_delay_interval.unwrap_or(0);
                let left =
                    u64::from(delay.min(record.expiry_interval)).saturating_sub(offline_secs);
                wills.push((
                    session.clone(),
                    last_will,
                    u32::try_from(left).unwrap_or(u32::MAX),
                ));
            }
            BrokerState::schedule_expiry_in(self, session.clone(), session.generation(), remaining);
            counts.sessions += 1;
            sessions.insert(client_id, Pending { session, restored });
        }

        // Groups declared at run time are declared again, before their queues come back.
        for owner in &recovered.declared {
            let declared = parse_group_owner(owner)
                .map(|(name, filter)| self.declare_group_unstored(name, filter));
            match declared {
                Some(Ok(group)) => {
                    tracing::info!(group = %group.name, filter = %group.filter, "declared shared group restored");
                }
                Some(Err(e)) => {
                    tracing::error!(owner, error = %e, "store: skipping a declared group")
                }
                None => tracing::error!(owner, "store: skipping a malformed declared group"),
            }
        }

        // Every group with a stored queue exists again, members or not.
        let mut groups = Vec::new();
        for owner in stats.keys().chain(inflight_by_owner.keys()) {
            if let Some((name, filter)) = parse_group_owner(owner) {
                if groups.iter().any(|(o, _): &(String, _)| o == owner) {
                    continue;
                }
                let group = self
                    .router
                    .ensure_group(name, filter, |n, f| self.make_group(n, f));
                groups.push((owner.clone(), group));
            }
        }
        counts.groups = groups.len();

        // Shared QoS 2 copies in flight go back to the member that holds them [MQTT-4.8.2-4];
        // one whose session is gone is dropped [MQTT-4.8.2-5]. Either way the group does not
        // send it again.
        let mut claimed: HashMap<&str, HashSet<u64>> = HashMap::new();
        for (owner, group) in &groups {
            let Some(records) = inflight_by_owner.get(owner) else {
                continue;
            };
            for (id, record) in records {
                claimed.entry(owner).or_default().insert(*id);
                let holder = sessions.get_mut(&record.client_id);
                let value = match (holder.is_some(), record.copy.qos) {
                    (true, QoS::ExactlyOnce) => backend.read_entry(owner, *id)?,
                    _ => None,
                };
                let (Some(pending), Some(value)) = (holder, value) else {
                    persistence.message_finished(&Arc::from(owner.as_str()), *id);
                    continue;
                };
                match decode_entry(&value, clock) {
                    Ok(entry) => pending.restored.inflight.push((
                        record.packet_id,
                        record.released,
                        Delivery {
                            message: entry.message,
                            qos: record.copy.qos,
                            retain: record.copy.retain,
                            subscription_ids: record.copy.subscription_ids.clone(),
                            group: Some(GroupTag {
                                origin: GroupOrigin::Local(group.id),
                                tally: group.tally.clone(),
                                // Its deadline counts from the restart.
                                handed_at: std::time::Instant::now(),
                                failures: 0,
                                key: None,
                            }),
                            stored: group.stored_ref(*id),
                        },
                    )),
                    Err(e) => {
                        counts.skipped += 1;
                        persistence.record_damaged(RecordKind::Entry, owner, *id, &e);
                    }
                }
            }
        }

        // Each session's own queue: exchanges in flight, then the memory window, then the
        // rest counted on disk.
        for (client_id, mut pending) in sessions {
            let owner = session_owner(&client_id);
            // The session's own queue, as its rows' handle: the same storage the session
            // finishes them through.
            let queue: Arc<dyn QueueStore> = JournalQueue::new(persistence.clone(), owner.clone());
            let mut own_inflight = inflight_by_owner.remove(&*owner).unwrap_or_default();
            own_inflight.sort_by_key(|(id, _)| *id);
            let mut skip = HashSet::new();
            let mut held = QueueStats::default();
            for (id, record) in own_inflight {
                skip.insert(id);
                let Some(value) = backend.read_entry(&owner, id)? else {
                    continue;
                };
                let entry = match decode_entry(&value, clock) {
                    Ok(entry) => entry,
                    Err(e) => {
                        // Moved out of the queue with its in-flight record: off its counts.
                        set_aside_damaged(
                            &persistence,
                            &mut counts,
                            &mut held,
                            &owner,
                            id,
                            &value,
                            &e,
                        );
                        continue;
                    }
                };
                held.count += 1;
                held.bytes += entry.message.weight() as u64;
                pending.restored.inflight.push((
                    record.packet_id,
                    record.released,
                    Delivery {
                        message: entry.message,
                        qos: record.copy.qos,
                        retain: record.copy.retain,
                        subscription_ids: record.copy.subscription_ids,
                        group: None,
                        stored: Some(StoredRef::new(queue.clone(), id)),
                    },
                ));
            }
            let total = stats.get(&*owner).copied().unwrap_or_default();
            let rows = backend.read_entries(&owner, 0, window + skip.len())?;
            let mut next_id = 0;
            for (id, value) in rows {
                if skip.contains(&id) {
                    continue;
                }
                if pending.restored.queued.len() >= window {
                    break;
                }
                next_id = id + 1;
                let entry = match decode_entry(&value, clock) {
                    Ok(entry) => entry,
                    Err(e) => {
                        set_aside_damaged(
                            &persistence,
                            &mut counts,
                            &mut held,
                            &owner,
                            id,
                            &value,
                            &e,
                        );
                        continue;
                    }
                };
                held.count += 1;
                held.bytes += entry.message.weight() as u64;
                let Some(copy) = entry.copy else { continue };
                pending.restored.queued.push(Delivery {
                    message: entry.message,
                    qos: copy.qos,
                    retain: copy.retain,
                    subscription_ids: copy.subscription_ids,
                    group: None,
                    stored: Some(StoredRef::new(queue.clone(), id)),
                });
            }
            pending.restored.spill = rest_on_disk(total, held, next_id);
            counts.queued += total.count;
            pending.session.restore(pending.restored);
        }

        // Group queues, minus the copies members hold.
        for (owner, group) in &groups {
            let total = stats.get(owner).copied().unwrap_or_default();
            let skip = claimed.remove(owner.as_str()).unwrap_or_default();
            let rows = backend.read_entries(owner, 0, window + skip.len())?;
            let mut items = Vec::new();
            let mut held = QueueStats::default();
            let mut next_id = 0;
            for (id, value) in rows {
                if skip.contains(&id) {
                    // Held by a member (restored above) or dropped with its session: not the
                    // queue's any more, and not counted on disk either.
                    held.count += 1;
                    continue;
                }
                if items.len() >= window {
                    break;
                }
                next_id = id + 1;
                match decode_entry(&value, clock) {
                    Ok(entry) => {
                        held.count += 1;
                        held.bytes += entry.message.weight() as u64;
                        items.push(Queued::new(entry.message, Some(id), None));
                    }
                    Err(e) => {
                        set_aside_damaged(
                            &persistence,
                            &mut counts,
                            &mut held,
                            owner,
                            id,
                            &value,
                            &e,
                        );
                    }
                }
            }
            counts.queued += total.count;
            group.restore_queue(items, rest_on_disk(total, held, next_id));
        }
        // A group that came back without members (its members were clean sessions, or it was
        // lingering) lingers afresh: its queue waits `shared.group_linger_secs` for a member.
        for (_, group) in &groups {
            if let Some(epoch) = group.begin_lingering() {
                self.arm_linger(crate::broker::routing::router::Lingering {
                    group: group.clone(),
                    epoch,
                });
            }
        }

        for (session, last_will, delay) in wills {
            will::schedule_in(self, &session, last_will, session.generation(), delay);
        }

        tracing::info!(
            store = %backend.describe(),
            sessions = counts.sessions,
            expired_sessions = counts.expired_sessions,
            queued_messages = counts.queued,
            retained_messages = counts.retained,
            groups = counts.groups,
            damaged_records = counts.skipped,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "store recovered"
        );
        Ok(())
    }

    /// Puts a restored session's subscriptions back into the router.
    pub(crate) fn restore_subscriptions(
        &self,
        session: &Arc<Session>,
        subscriptions: Vec<(String, crate::packet::SubscriptionOptions, Option<u32>)>,
    ) {
        // Checked as the session's owner's; a session stored before owners were kept, as an
        // anonymous client's until the client connects again (`renew_read_guards`).
        let owner = session.username();
        let who = acl::Identity {
            username: owner.as_deref(),
            client_id: &session.client_id,
        };
        for (filter, options, identifier) in subscriptions {
            let filter = ByteString::from(filter);
            let parsed = match parse_subscription_with(
                &filter,
                self.config.limits.max_topic_levels,
                self.share_syntax(),
            ) {
                Ok(parsed) => parsed,
                Err(e) => {
                    tracing::warn!(client_id = %session.client_id, filter = %filter, error = %e, "store: skipping an invalid subscription");
                    continue;
                }
            };
            let key = ByteString::from(session_key(&filter, &parsed).as_ref());
            match parsed {
                SubscriptionFilter::Plain(plain) => {
                    let read = acl::ReadGuard::new(&self.acl, who, plain);
                    self.router
                        .subscribe(plain, session, options, identifier, read);
                }
                SubscriptionFilter::Shared {
                    group,
                    filter: shared,
                } => {
                    let membership = crate::broker::shared::Membership {
                        options,
                        identifier,
                        weight: 1,
                        // Not kept in the store (nor is the weight): a restored member is
                        // seen as if it had subscribed without user properties.
                        user_properties: Vec::new(),
                        read: acl::ReadGuard::new(&self.acl, who, shared),
                    };
                    self.router
                        .join_group(group, shared, session, membership, |name, filter| {
                            self.make_group(name, filter)
                        });
                }
            }
            session.add_subscription(
                key,
                session::StoredSubscription {
                    options,
                    identifier,
                },
            );
        }
    }
}

/// The part of a queue left on disk after its window was read: `total` minus what was taken.
fn rest_on_disk(total: QueueStats, held: QueueStats, next_id: u64) -> Spill {
    let count = total.count.saturating_sub(held.count);
    Spill {
        count: usize::try_from(count).unwrap_or(usize::MAX),
        bytes: usize::try_from(total.bytes.saturating_sub(held.bytes)).unwrap_or(usize::MAX),
        next_id,
        refilling: false,
    }
}
