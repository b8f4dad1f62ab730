//! Applying one batch of ops as one redb transaction, with each queue's row count and bytes
//! kept in step, and damaged records moved to the quarantine table.

use std::collections::HashMap;

use redb::{Durability, ReadableTable};

use super::tables::{
    DAMAGED, DECLARED, ENTRIES, INCOMING, INFLIGHT, LAST_COMMIT_KEY, META, NEXT_ID_KEY, QUEUES,
    RETAINED, SESSIONS,
};
use super::RedbBackend;
use crate::broker::store::encoding::entry_weight;
use crate::broker::store::{Op, QueueStats, RecordKind, StoreError};

/// The trait's work, unguarded: [`StoreBackend`](crate::broker::store::StoreBackend) runs each
/// under [`guarded`](super::guarded::guarded), so that a page redb cannot parse is an error of
/// the call, not a dead committer thread.
impl RedbBackend {
    pub(super) fn commit_unguarded(
        &self,
        ops: &[Op],
        now_ms: u64,
        next_id: u64,
    ) -> Result<(), StoreError> {
        let mut write = self.begin_write()?;
        write
            .set_durability(Durability::Immediate)
            .map_err(|e| self.io(e))?;
        {
            let mut sessions = write.open_table(SESSIONS).map_err(|e| self.io(e))?;
            let mut entries = write.open_table(ENTRIES).map_err(|e| self.io(e))?;
            let mut inflight = write.open_table(INFLIGHT).map_err(|e| self.io(e))?;
            let mut incoming = write.open_table(INCOMING).map_err(|e| self.io(e))?;
            let mut queues = write.open_table(QUEUES).map_err(|e| self.io(e))?;
            let mut retained = write.open_table(RETAINED).map_err(|e| self.io(e))?;
            let mut meta = write.open_table(META).map_err(|e| self.io(e))?;
            let mut declared = write.open_table(DECLARED).map_err(|e| self.io(e))?;
            // Absolute counts of the queues this batch touches, written back once at the end.
            let mut stats: HashMap<&str, QueueStats> = HashMap::new();
            macro_rules! stats_of {
                ($owner:expr) => {{
                    let owner: &str = $owner;
                    if !stats.contains_key(owner) {
                        let current = queues
                            .get(owner)
                            .map_err(|e| self.io(e))?
                            .map(|v| {
                                let (count, bytes) = v.value();
                                QueueStats { count, bytes }
                            })
                            .unwrap_or_default();
                        stats.insert(owner, current);
                    }
                    stats.get_mut(owner).expect("inserted above")
                }};
            }
            for op in ops {
                match op {
                    Op::PutSession { client_id, value } => {
                        sessions
                            .insert(&**client_id, value.as_slice())
                            .map_err(|e| self.io(e))?;
                    }
                    Op::DeleteSession { client_id } => {
                        sessions.remove(&**client_id).map_err(|e| self.io(e))?;
                        let owner = crate::broker::store::session_owner(client_id);
                        let owner: &str = &owner;
                        entries
                            .retain_in((owner, 0)..=(owner, u64::MAX), |_, _| false)
                            .map_err(|e| self.io(e))?;
                        inflight
                            .retain_in((owner, 0)..=(owner, u64::MAX), |_, _| false)
                            .map_err(|e| self.io(e))?;
                        let client: &str = client_id;
                        incoming
                            .retain_in((client, 0)..=(client, u16::MAX), |_, _| false)
                            .map_err(|e| self.io(e))?;
                        queues.remove(owner).map_err(|e| self.io(e))?;
                        // Later ops of this batch on this owner count from empty.
                        if let Some(s) = stats.iter_mut().find(|(k, _)| **k == owner) {
                            *s.1 = QueueStats::default();
                        }
                    }
                    Op::PutEntry { owner, id, value } => {
                        let weight =
                            u64::from(entry_weight(value).map_err(|e| self.corrupt("entries", e))?);
                        let old = entries
                            .insert((&**owner, *id), value.as_slice())
                            .map_err(|e| self.io(e))?
                            .map(|old| entry_weight(old.value()).map(u64::from));
                        let s = stats_of!(owner);
                        match old {
                            Some(Ok(old_weight)) => {
                                s.bytes = s.bytes.saturating_sub(old_weight) + weight
                            }
                            _ => {
                                s.count += 1;
                                s.bytes += weight;
                            }
                        }
                    }
                    Op::DeleteEntry { owner, id } => {
                        let old = entries
                            .remove((&**owner, *id))
                            .map_err(|e| self.io(e))?
                            .map(|old| entry_weight(old.value()).map(u64::from));
                        inflight.remove((&**owner, *id)).map_err(|e| self.io(e))?;
                        if let Some(old) = old {
                            let s = stats_of!(owner);
                            s.count = s.count.saturating_sub(1);
                            s.bytes = s.bytes.saturating_sub(old.unwrap_or(0));
                        }
                    }
                    Op::PutInflight { owner, id, value } => {
                        inflight
                            .insert((&**owner, *id), value.as_slice())
                            .map_err(|e| self.io(e))?;
                    }
                    Op::DeleteOwner { owner } => {
                        let o: &str = owner;
                        entries
                            .retain_in((o, 0)..=(o, u64::MAX), |_, _| false)
                            .map_err(|e| self.io(e))?;
                        inflight
                            .retain_in((o, 0)..=(o, u64::MAX), |_, _| false)
                            .map_err(|e| self.io(e))?;
                        *stats_of!(owner) = QueueStats::default();
                    }
                    Op::DeleteFrom { owner, from } => {
                        let o: &str = owner;
                        let mut removed = QueueStats::default();
                        entries
                            .retain_in((o, *from)..=(o, u64::MAX), |_, value| {
                                removed.count += 1;
                                // A row too damaged to weigh still goes; it weighs nothing.
                                removed.bytes += entry_weight(value).map_or(0, u64::from);
                                false
                            })
                            .map_err(|e| self.io(e))?;
                        inflight
                            .retain_in((o, *from)..=(o, u64::MAX), |_, _| false)
                            .map_err(|e| self.io(e))?;
                        let s = stats_of!(owner);
                        s.count = s.count.saturating_sub(removed.count);
                        s.bytes = s.bytes.saturating_sub(removed.bytes);
                    }
                    Op::PutIncoming {
                        client_id,
                        packet_id,
                    } => {
                        incoming
                            .insert((&**client_id, *packet_id), 0)
                            .map_err(|e| self.io(e))?;
                    }
                    Op::DeleteIncoming {
                        client_id,
                        packet_id,
                    } => {
                        incoming
                            .remove((&**client_id, *packet_id))
                            .map_err(|e| self.io(e))?;
                    }
                    Op::PutRetained { topic, value } => {
                        retained
                            .insert(&**topic, value.as_slice())
                            .map_err(|e| self.io(e))?;
                    }
                    Op::DeleteRetained { topic } => {
                        retained.remove(&**topic).map_err(|e| self.io(e))?;
                    }
                    Op::PutDeclared { owner } => {
                        declared.insert(&**owner, 1).map_err(|e| self.io(e))?;
                    }
                    Op::DeleteDeclared { owner } => {
                        declared.remove(&**owner).map_err(|e| self.io(e))?;
                    }
                    Op::Quarantine { kind, name, id } => {
                        let key = (&**name, *id);
                        let value = match kind {
                            RecordKind::Session => sessions
                                .remove(&**name)
                                .map_err(|e| self.io(e))?
                                .map(|v| v.value().to_vec()),
                            RecordKind::Entry => {
                                let old = entries
                                    .remove(key)
                                    .map_err(|e| self.io(e))?
                                    .map(|v| v.value().to_vec());
                                // An exchange whose message cannot be read cannot resume.
                                inflight.remove(key).map_err(|e| self.io(e))?;
                                if let Some(old) = &old {
                                    let s = stats_of!(name);
                                    s.count = s.count.saturating_sub(1);
                                    s.bytes = s
                                        .bytes
                                        .saturating_sub(entry_weight(old).map_or(0, u64::from));
                                }
                                old
                            }
                            RecordKind::Inflight => inflight
                                .remove(key)
                                .map_err(|e| self.io(e))?
                                .map(|v| v.value().to_vec()),
                            RecordKind::Retained => retained
                                .remove(&**name)
                                .map_err(|e| self.io(e))?
                                .map(|v| v.value().to_vec()),
                        };
                        if let Some(value) = value {
                            write
                                .open_table(DAMAGED)
                                .map_err(|e| self.io(e))?
                                .insert((kind.table(), &**name, *id), value.as_slice())
                                .map_err(|e| self.io(e))?;
                        }
                    }
                }
            }
            for (owner, s) in stats {
                if s.count == 0 {
                    queues.remove(owner).map_err(|e| self.io(e))?;
                } else {
                    queues
                        .insert(owner, (s.count, s.bytes))
                        .map_err(|e| self.io(e))?;
                }
            }
            meta.insert(LAST_COMMIT_KEY, now_ms)
                .map_err(|e| self.io(e))?;
            meta.insert(NEXT_ID_KEY, next_id).map_err(|e| self.io(e))?;
        }
        write.commit().map_err(|e| self.io(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::store::StoreBackend;
    use std::sync::Arc;

    fn entry(weight: u32) -> Vec<u8> {
        // A value as `encoding` lays it out: format byte, then the weight.
        let mut v = vec![crate::broker::store::encoding::FORMAT];
        v.extend_from_slice(&weight.to_be_bytes());
        v
    }

    #[test]
    fn commits_survive_reopen_and_queue_counts_follow_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let owner: Arc<str> = Arc::from("g:w/jobs/#");
        {
            let store = RedbBackend::open(dir.path(), true).unwrap();
            let ops: Vec<Op> = (1..=5)
                .map(|id| Op::PutEntry {
                    owner: owner.clone(),
                    id,
                    value: entry(10),
                })
                .chain([Op::DeleteEntry {
                    owner: owner.clone(),
                    id: 2,
                }])
                .collect();
            store.commit(&ops, 1234, 6).unwrap();
        }
        let store = RedbBackend::open(dir.path(), true).unwrap();
        let recovered = store.recover().unwrap();
        assert_eq!(recovered.last_commit_ms, 1234);
        assert_eq!(recovered.next_id, 6);
        assert_eq!(
            recovered.queues,
            vec![(
                owner.to_string(),
                QueueStats {
                    count: 4,
                    bytes: 40
                }
            )]
        );
        let ids: Vec<u64> = store
            .read_entries(&owner, 3, 10)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, vec![3, 4, 5]);
        store
            .commit(
                &[Op::DeleteOwner {
                    owner: owner.clone(),
                }],
                1,
                6,
            )
            .unwrap();
        assert!(store.recover().unwrap().queues.is_empty());
        assert!(store.read_entries(&owner, 0, 10).unwrap().is_empty());
    }

    #[test]
    fn deleting_a_queue_tail_keeps_the_head_and_its_counts() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbBackend::open(dir.path(), true).unwrap();
        let owner: crate::broker::store::Owner = Arc::from("g:jobs/t");
        let ops: Vec<Op> = (1..=5)
            .map(|id| Op::PutEntry {
                owner: owner.clone(),
                id,
                value: entry(7),
            })
            .chain([Op::DeleteFrom {
                owner: owner.clone(),
                from: 3,
            }])
            .collect();
        store.commit(&ops, 1, 6).unwrap();
        let ids: Vec<u64> = store
            .read_entries(&owner, 0, 10)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, vec![1, 2]);
        let recovered = store.recover().unwrap();
        assert_eq!(
            recovered.queues,
            vec![(
                "g:jobs/t".to_owned(),
                QueueStats {
                    count: 2,
                    bytes: 14
                }
            )]
        );
    }

    #[test]
    fn a_quarantined_entry_leaves_its_queue_and_is_kept_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbBackend::open(dir.path(), true).unwrap();
        let owner: Arc<str> = Arc::from("g:w/jobs");
        let mut ops: Vec<Op> = (1..=3)
            .map(|id| Op::PutEntry {
                owner: owner.clone(),
                id,
                value: entry(10),
            })
            .collect();
        ops.push(Op::PutInflight {
            owner: owner.clone(),
            id: 2,
            value: vec![1],
        });
        store.commit(&ops, 1, 4).unwrap();
        store
            .commit(
                &[Op::Quarantine {
                    kind: RecordKind::Entry,
                    name: owner.clone(),
                    id: 2,
                }],
                2,
                4,
            )
            .unwrap();
        let ids: Vec<u64> = store
            .read_entries(&owner, 0, 10)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, vec![1, 3]);
        let recovered = store.recover().unwrap();
        assert!(recovered.inflight.is_empty());
        assert_eq!(
            recovered.queues,
            vec![(
                owner.to_string(),
                QueueStats {
                    count: 2,
                    bytes: 20
                }
            )]
        );
        let read = store.begin_read().unwrap();
        let damaged = read.open_table(DAMAGED).unwrap();
        let kept = damaged.get(("entries", &*owner, 2)).unwrap().unwrap();
        assert_eq!(kept.value(), entry(10).as_slice());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use crate::broker::store::StoreBackend;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    #[derive(Debug, Clone)]
    enum Step {
        Put(u8, u64, u32),
        Delete(u8, u64),
        Inflight(u8, u64),
        DeleteOwner(u8),
        Commit,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u8..3, 0u64..16, 1u32..100).prop_map(|(o, i, w)| Step::Put(o, i, w)),
            3 => (0u8..3, 0u64..16).prop_map(|(o, i)| Step::Delete(o, i)),
            1 => (0u8..3, 0u64..16).prop_map(|(o, i)| Step::Inflight(o, i)),
            1 => (0u8..3).prop_map(Step::DeleteOwner),
            2 => Just(Step::Commit),
        ]
    }

    fn owner(o: u8) -> Arc<str> {
        Arc::from(format!("g:n{o}/t/#"))
    }

    fn value(weight: u32) -> Vec<u8> {
        let mut v = vec![crate::broker::store::encoding::FORMAT];
        v.extend_from_slice(&weight.to_be_bytes());
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Whatever the ops and however they are batched, the store holds what a plain map
        /// would, and its per-queue counts match its rows.
        #[test]
        fn the_store_matches_a_model(steps in proptest::collection::vec(step(), 1..60)) {
            let dir = tempfile::tempdir().unwrap();
            let store = RedbBackend::open(dir.path(), false).unwrap();
            let mut entries: BTreeMap<(String, u64), u32> = BTreeMap::new();
            let mut inflight: BTreeMap<(String, u64), ()> = BTreeMap::new();
            let mut batch = Vec::new();
            for step in steps.into_iter().chain([Step::Commit]) {
                match step {
                    Step::Put(o, id, w) => {
                        entries.insert((owner(o).to_string(), id), w);
                        batch.push(Op::PutEntry { owner: owner(o), id, value: value(w) });
                    }
                    Step::Delete(o, id) => {
                        entries.remove(&(owner(o).to_string(), id));
                        inflight.remove(&(owner(o).to_string(), id));
                        batch.push(Op::DeleteEntry { owner: owner(o), id });
                    }
                    Step::Inflight(o, id) => {
                        inflight.insert((owner(o).to_string(), id), ());
                        batch.push(Op::PutInflight { owner: owner(o), id, value: vec![1] });
                    }
                    Step::DeleteOwner(o) => {
                        let name = owner(o).to_string();
                        entries.retain(|(k, _), _| *k != name);
                        inflight.retain(|(k, _), _| *k != name);
                        batch.push(Op::DeleteOwner { owner: owner(o) });
                    }
                    Step::Commit => {
                        store.commit(&std::mem::take(&mut batch), 1, 1).unwrap();
                    }
                }
            }
            let recovered = store.recover().unwrap();
            let mut expected: BTreeMap<String, QueueStats> = BTreeMap::new();
            for ((o, _), w) in &entries {
                let s = expected.entry(o.clone()).or_default();
                s.count += 1;
                s.bytes += u64::from(*w);
            }
            let got: BTreeMap<String, QueueStats> = recovered.queues.into_iter().collect();
            prop_assert_eq!(got, expected);
            let got_inflight: BTreeMap<(String, u64), ()> =
                recovered.inflight.into_iter().map(|(o, id, _)| ((o, id), ())).collect();
            prop_assert_eq!(got_inflight, inflight);
            for o in 0..3 {
                let rows: Vec<u64> = store
                    .read_entries(&owner(o), 0, 100)
                    .unwrap()
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect();
                let want: Vec<u64> = entries
                    .keys()
                    .filter(|(k, _)| *k == *owner(o))
                    .map(|(_, id)| *id)
                    .collect();
                prop_assert_eq!(rows, want);
            }
        }
    }
}
