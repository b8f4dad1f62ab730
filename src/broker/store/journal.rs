//! Group commit. Every connection appends its ops here; one committer thread writes what has
//! gathered as one transaction at most every `storage.commit_interval_ms`, then tells the
//! waiting publishers (a `watch` of the last committed batch number) and serves the queue
//! refills that asked for rows now on disk.
//!
//! Batches are numbered from 1. An op appended while batch `n` is open is durable once
//! `committed() >= n`; ops of one key are appended under that key's queue lock, so a batch
//! never reorders them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use super::encoding::{unix_now_ms, Corrupt};
use super::{Op, Owner, RecordKind, StoreBackend, StoreError};
use crate::log_limit::LogLimit;

/// Bytes of ops that may wait for a commit before publishers are held back: the journal's own
/// bound, so a slow disk slows publishers down instead of growing memory.
pub const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;
/// With nothing to write, the commit time is still refreshed this often: it is the best
/// estimate of when a broker that died stopped, for sessions whose connection it cut.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// The `[storage]` settings the journal and the queues work with.
#[derive(Debug, Clone, Copy)]
pub struct StoreSettings {
    pub commit_interval: Duration,
    /// Messages (and whole-message bytes) a queue keeps in memory; the rest waits on disk.
    pub window_messages: usize,
    pub window_bytes: usize,
}

/// Rows read back for a queue whose memory window ran low, or why they could not be.
pub type RefillResult = Result<Vec<(u64, Vec<u8>)>, StoreError>;

struct Refill {
    owner: Owner,
    from_id: u64,
    limit: usize,
    /// The batch whose commit puts every row asked for on disk.
    needed: u64,
    deliver: Box<dyn FnOnce(RefillResult) + Send>,
}

#[derive(Default)]
struct Pending {
    ops: Vec<Op>,
    bytes: usize,
    /// The batch the next op goes into.
    open_batch: u64,
    refills: Vec<Refill>,
    stop: bool,
}

pub struct Journal {
    backend: Arc<dyn StoreBackend>,
    /// Ops waiting for the next commit. A leaf lock: taken under any queue's lock (that is what
    /// keeps one key's ops in order), and nothing is locked or called while it is held.
    pending: Mutex<Pending>,
    wake: Condvar,
    committed: watch::Sender<u64>,
    /// Copy ids; never reused, also across restarts.
    next_id: AtomicU64,
    pub settings: StoreSettings,
    failure_log: LogLimit,
    /// Records found damaged (checksum or layout) since start: never delivered, moved aside.
    damaged: AtomicU64,
    damaged_log: LogLimit,
    committer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("store", &self.backend.describe())
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Starts the committer thread over `backend`, handing out copy ids from `next_id`.
    pub fn start(
        backend: Arc<dyn StoreBackend>,
        settings: StoreSettings,
        next_id: u64,
    ) -> Arc<Journal> {
        let journal = Arc::new(Journal {
            backend,
            pending: Mutex::new(Pending {
                open_batch: 1,
                ..Pending::default()
            }),
            wake: Condvar::new(),
            committed: watch::Sender::new(0),
            next_id: AtomicU64::new(next_id.max(1)),
            settings,
            failure_log: LogLimit::new(Duration::from_secs(1)),
            damaged: AtomicU64::new(0),
            damaged_log: LogLimit::new(Duration::from_secs(1)),
            committer: Mutex::new(None),
        });
        let worker = journal.clone();
        let handle = std::thread::Builder::new()
            .name("sharq-store".to_owned())
            .spawn(move || worker.run());
        match handle {
            Ok(handle) => *journal.committer.lock() = Some(handle),
            Err(e) => tracing::error!(error = %e, "store: cannot start the committer thread"),
        }
        journal
    }

    pub fn backend(&self) -> &Arc<dyn StoreBackend> {
        &self.backend
    }

    /// A fresh copy id: larger than every id handed out before, in this process or an earlier one.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Appends one op to the open batch.
    pub fn append(&self, op: Op) {
        let mut pending = self.pending.lock();
        pending.bytes += op.size();
        pending.ops.push(op);
        if pending.ops.len() == 1 {
            self.wake.notify_one();
        }
    }

    /// A record read back failed its checksum or its layout: it is not delivered, it is counted
    /// and logged with its queue (or client, or topic), and it is moved to the store's table of
    /// damaged records so that the next start neither counts it as a message nor reports it
    /// again. `name` is the queue for entries and in-flight records, else the client id or the
    /// topic; `id` the copy id (0 where there is none).
    pub fn damaged(&self, kind: RecordKind, name: &str, id: u64, error: &Corrupt) {
        self.damaged.fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = self.damaged_log.allow() {
            let table = kind.table();
            let message = "store: damaged record not delivered; moved to the damaged_records table";
            match kind {
                RecordKind::Entry | RecordKind::Inflight => {
                    tracing::error!(store = %self.backend.describe(), table = %table, queue = %name, id, error = %error, suppressed, "{message}")
                }
                RecordKind::Session => {
                    tracing::error!(store = %self.backend.describe(), table = %table, client_id = %name, error = %error, suppressed, "{message}")
                }
                RecordKind::Retained => {
                    tracing::error!(store = %self.backend.describe(), table = %table, topic = %name, error = %error, suppressed, "{message}")
                }
            }
        }
        self.append(Op::Quarantine {
            kind,
            name: Arc::from(name),
            id,
        });
    }

    /// Damaged records found since start (`sharq_store_damaged_records_total` on `/metrics`).
    pub fn damaged_records(&self) -> u64 {
        self.damaged.load(Ordering::Relaxed)
    }

    /// The batch whose commit makes every op appended so far durable.
    pub fn durable_point(&self) -> u64 {
        let pending = self.pending.lock();
        if pending.ops.is_empty() {
            // What is not pending was swapped out: the batch before the open one holds it.
            pending.open_batch - 1
        } else {
            pending.open_batch
        }
    }

    pub fn committed(&self) -> u64 {
        *self.committed.borrow()
    }

    /// Changes each time a batch commits.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// True while more is waiting to be written than the journal's bound: publishers wait for
    /// the next commit before routing more.
    pub fn congested(&self) -> bool {
        self.pending.lock().bytes > MAX_PENDING_BYTES
    }

    /// Asks for up to `limit` rows of `owner` from `from_id` on, read after the next commit (so
    /// every row appended before this call is there) on the committer thread; `deliver` gets
    /// them there.
    pub fn request_refill(
        &self,
        owner: Owner,
        from_id: u64,
        limit: usize,
        deliver: Box<dyn FnOnce(RefillResult) + Send>,
    ) {
        let mut pending = self.pending.lock();
        let needed = if pending.ops.is_empty() {
            pending.open_batch - 1
        } else {
            pending.open_batch
        };
        pending.refills.push(Refill {
            owner,
            from_id,
            limit,
            needed,
            deliver,
        });
        self.wake.notify_one();
    }

    /// Writes what is pending and stops the committer. Blocking.
    pub fn close(&self) {
        {
            let mut pending = self.pending.lock();
            pending.stop = true;
            self.wake.notify_one();
        }
        let handle = self.committer.lock().take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::error!("store: the committer thread panicked");
            }
        }
    }

    fn run(self: Arc<Self>) {
        let mut last_start = Instant::now() - self.settings.commit_interval;
        loop {
            let heartbeat = {
                let mut pending = self.pending.lock();
                let mut timed_out = false;
                while !pending.stop && pending.ops.is_empty() && pending.refills.is_empty() {
                    if self.wake.wait_for(&mut pending, HEARTBEAT).timed_out() {
                        timed_out = true;
                        break;
                    }
                }
                timed_out
            };
            // A queue draining its disk tail must not wait a commit cycle per window: rows
            // already committed are read at once.
            if self.serve_ready_refills() && !heartbeat {
                let pending = self.pending.lock();
                if !pending.stop && pending.ops.is_empty() {
                    continue;
                }
            }
            // Let a batch gather: commits are at least the interval apart.
            let since = last_start.elapsed();
            if since < self.settings.commit_interval {
                std::thread::sleep(self.settings.commit_interval - since);
            }
            last_start = Instant::now();
            let (ops, batch, refills, stop) = {
                let mut pending = self.pending.lock();
                let batch = pending.open_batch;
                pending.open_batch += 1;
                pending.bytes = 0;
                (
                    std::mem::take(&mut pending.ops),
                    batch,
                    std::mem::take(&mut pending.refills),
                    pending.stop,
                )
            };
            let ops = coalesce(ops);
            if self.commit_until_done(&ops, stop) {
                self.committed.send_replace(batch);
            }
            for refill in refills {
                let rows = self
                    .backend
                    .read_entries(&refill.owner, refill.from_id, refill.limit);
                (refill.deliver)(rows);
            }
            if stop && self.pending.lock().ops.is_empty() {
                self.backend.close();
                return;
            }
        }
    }

    /// Serves the refills whose rows are committed; true if there were any.
    fn serve_ready_refills(&self) -> bool {
        let committed = self.committed();
        let ready: Vec<Refill> = {
            let mut pending = self.pending.lock();
            let (ready, waiting) = std::mem::take(&mut pending.refills)
                .into_iter()
                .partition(|r| r.needed <= committed);
            pending.refills = waiting;
            ready
        };
        let served = !ready.is_empty();
        for refill in ready {
            let rows = self
                .backend
                .read_entries(&refill.owner, refill.from_id, refill.limit);
            (refill.deliver)(rows);
        }
        served
    }

    /// Commits `ops`, retrying while the disk refuses: acknowledgements wait meanwhile, and
    /// publishers are held back once the journal's bound is reached. Nothing is acknowledged
    /// that is not on disk.
    fn commit_until_done(&self, ops: &[Op], stopping: bool) -> bool {
        let mut attempts = 0u32;
        loop {
            let next_id = self.next_id.load(Ordering::Relaxed);
            match self.backend.commit(ops, unix_now_ms(), next_id) {
                Ok(()) => return true,
                Err(e) => {
                    attempts += 1;
                    if let Some(suppressed) = self.failure_log.allow() {
                        tracing::error!(error = %e, ops = ops.len(), suppressed, "store: commit failed; retrying, acknowledgements wait");
                    }
                    if stopping && attempts >= 10 {
                        tracing::error!(
                            ops = ops.len(),
                            "store: giving up on the last batch at shutdown"
                        );
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// Drops the copies that came and went within one batch: a copy stored and finished before its
/// batch commits (a member that acknowledged within a few milliseconds) never touches the disk.
/// Exact, because a copy id is stored once: its row cannot predate the batch that stores it.
fn coalesce(ops: Vec<Op>) -> Vec<Op> {
    let mut keep = vec![true; ops.len()];
    // Copies stored in this batch, and their in-flight records, by (owner, id).
    let mut stored: HashMap<(&str, u64), (usize, Vec<usize>)> = HashMap::new();
    // Keys with an in-flight record written before their entry: their delete must stay.
    let mut early_inflight: std::collections::HashSet<(&str, u64)> = Default::default();
    for (index, op) in ops.iter().enumerate() {
        match op {
            Op::PutEntry { owner, id, .. } => {
                stored.insert((owner, *id), (index, Vec::new()));
            }
            Op::PutInflight { owner, id, .. } => match stored.get_mut(&(&**owner, *id)) {
                Some((_, inflight)) => inflight.push(index),
                None => {
                    early_inflight.insert((owner, *id));
                }
            },
            Op::DeleteEntry { owner, id } => {
                let key = (&**owner, *id);
                if let Some((put, inflight)) = stored.remove(&key) {
                    keep[put] = false;
                    keep[index] = early_inflight.contains(&key);
                    for i in inflight {
                        keep[i] = false;
                    }
                }
            }
            _ => {}
        }
    }
    if keep.iter().all(|k| *k) {
        return ops;
    }
    ops.into_iter()
        .zip(keep)
        .filter_map(|(op, keep)| keep.then_some(op))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(owner: &Owner, id: u64) -> Op {
        Op::PutEntry {
            owner: owner.clone(),
            id,
            value: vec![],
        }
    }

    fn delete(owner: &Owner, id: u64) -> Op {
        Op::DeleteEntry {
            owner: owner.clone(),
            id,
        }
    }

    #[test]
    fn a_copy_stored_and_finished_in_one_batch_never_reaches_the_disk() {
        let g: Owner = std::sync::Arc::from("g:w/jobs");
        let c: Owner = std::sync::Arc::from("c:x");
        let ops = vec![
            put(&g, 1),
            put(&g, 2),
            Op::PutInflight {
                owner: g.clone(),
                id: 1,
                value: vec![],
            },
            delete(&g, 1),
            // Stored in an earlier batch: its delete must reach the disk.
            delete(&g, 7),
            put(&c, 1),
        ];
        let left: Vec<String> = coalesce(ops)
            .iter()
            .map(|op| match op {
                Op::PutEntry { owner, id, .. } => format!("put {owner} {id}"),
                Op::DeleteEntry { owner, id } => format!("delete {owner} {id}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            left,
            vec!["put g:w/jobs 2", "delete g:w/jobs 7", "put c:x 1"]
        );
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    type Rows = BTreeSet<(String, u64)>;

    /// Applies ops to a model of the rows: (owner, id) of entries and of in-flight records.
    fn apply(ops: &[Op]) -> (Rows, Rows) {
        let mut entries = BTreeSet::new();
        let mut inflight = BTreeSet::new();
        for op in ops {
            match op {
                Op::PutEntry { owner, id, .. } => {
                    entries.insert((owner.to_string(), *id));
                }
                Op::PutInflight { owner, id, .. } => {
                    inflight.insert((owner.to_string(), *id));
                }
                Op::DeleteEntry { owner, id } => {
                    entries.remove(&(owner.to_string(), *id));
                    inflight.remove(&(owner.to_string(), *id));
                }
                Op::DeleteOwner { owner } => {
                    entries.retain(|(o, _)| **o != **owner);
                    inflight.retain(|(o, _)| **o != **owner);
                }
                Op::DeleteFrom { owner, from } => {
                    entries.retain(|(o, id)| **o != **owner || id < from);
                    inflight.retain(|(o, id)| **o != **owner || id < from);
                }
                _ => {}
            }
        }
        (entries, inflight)
    }

    proptest! {
        /// Coalescing never changes what a batch leaves on disk, as long as each copy id is
        /// stored once (which the journal's counter guarantees).
        #[test]
        fn coalescing_keeps_the_outcome(
            script in proptest::collection::vec((0u8..4, 0u8..2, 0u64..12), 1..80),
            stored_before in proptest::collection::btree_set(0u64..12, 0..6),
        ) {
            let mut put_once = BTreeSet::new();
            let mut ops = Vec::new();
            // Rows an earlier batch left: the model starts with them.
            let mut before = Vec::new();
            for id in &stored_before {
                put_once.insert((0u8, *id));
                before.push(Op::PutEntry { owner: Owner::from("g:0/t"), id: *id, value: vec![] });
            }
            for (kind, o, id) in script {
                let owner: Owner = Owner::from(format!("g:{o}/t"));
                match kind {
                    0 if put_once.insert((o, id)) => {
                        ops.push(Op::PutEntry { owner, id, value: vec![] })
                    }
                    1 => ops.push(Op::PutInflight { owner, id, value: vec![] }),
                    2 => ops.push(Op::DeleteEntry { owner, id }),
                    3 if id == 0 => ops.push(Op::DeleteOwner { owner }),
                    3 if id == 1 => ops.push(Op::DeleteFrom { owner, from: 6 }),
                    _ => {}
                }
            }
            let raw: Vec<Op> = before.iter().cloned().chain(ops.iter().cloned()).collect();
            let coalesced: Vec<Op> = before.into_iter().chain(coalesce(ops)).collect();
            prop_assert_eq!(apply(&raw), apply(&coalesced));
        }
    }
}
