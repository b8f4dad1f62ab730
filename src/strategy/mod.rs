//! Dispatch strategies: which member of a shared group gets a message.
//!
//! Each group owns a [`Dispatcher`]. When the group's strategy is a Wasm component, the
//! dispatcher holds the group's guest instance, pushes membership and member-state changes into
//! it, and asks it to choose. Whatever goes wrong in the guest (a trap, a timeout, running out
//! of memory, an answer that is not a current online member) the message is not lost: the
//! group's native round robin chooses instead, the instance is rebuilt with membership replayed,
//! and after `max_failures` failures in a row the group stays on the native round robin until
//! the next reload.

pub mod builtin;
pub mod check;
pub mod host;
pub mod latency;
pub mod plugin_log;
pub mod registry;
pub mod scenario;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytestring::ByteString;

use crate::log_limit::LogLimit;
use crate::packet::UserProperties;

pub use host::{SandboxLimits, WasmHost, WasmInstance};
pub use registry::{ResolvedStrategy, StrategyRegistry};

/// What a strategy asked for beyond the flat message metadata.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    pub topic: bool,
    pub publisher: bool,
    pub payload: bool,
    /// Contract 0.2.0 only.
    pub user_properties: bool,
    /// Contract 0.2.0 only.
    pub content_type: bool,
}

impl Needs {
    pub fn any(self) -> bool {
        self.topic || self.publisher || self.payload || self.user_properties || self.content_type
    }

    /// The guest export a message is dispatched with: `select-full` once `init` asked for more
    /// than the flat metadata (see [`WasmInstance::select`]). Named in failure reports.
    pub fn select_call(self) -> &'static str {
        if self.any() {
            "select-full"
        } else {
            "select"
        }
    }
}

/// A member as a strategy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: u64,
    pub client_id: ByteString,
    pub weight: u32,
    pub subscribed_at_ms: u64,
    /// The user properties of the SUBSCRIBE that made the session a member; contract 0.2.0
    /// strategies see them.
    pub user_properties: UserProperties,
}

/// A member's connection state and load, as pushed with `member-load`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemberLoad {
    pub inflight: u32,
    pub capacity: u32,
    pub online: bool,
}

impl MemberLoad {
    pub fn has_room(self) -> bool {
        self.online && self.inflight < self.capacity
    }

    /// The part of the state strategies are told about: online, and full or not, given what was
    /// told last. A member becomes full when its window is; it has room again only once a
    /// quarter of the window is free. Without that hysteresis a busy member flips on nearly
    /// every acknowledgement and `member-load` would cost as much as `select`.
    fn signature(self, previous: Option<(bool, bool)>) -> (bool, bool) {
        let full = match previous {
            Some((_, true)) => {
                self.inflight > self.capacity.saturating_sub((self.capacity / 4).max(1))
            }
            _ => self.inflight >= self.capacity,
        };
        (self.online, full)
    }
}

/// An online member that is not full, as a pushed signature says.
fn signature_has_room(signature: (bool, bool)) -> bool {
    signature == (true, false)
}

/// One message, as a strategy may see it.
#[derive(Debug, Clone, Copy)]
pub struct MessageView<'a> {
    pub topic: &'a str,
    pub publisher: &'a str,
    pub payload: &'a [u8],
    pub topic_hash: u64,
    pub publisher_hash: u64,
    /// The message's `ordered_by` key (xxh3), or `topic_hash` when the group has none;
    /// contract 0.2.0 strategies see it.
    pub key_hash: u64,
    pub qos: u8,
    pub retain: bool,
    /// The PUBLISH's user properties and content type; contract 0.2.0 strategies may ask.
    pub user_properties: &'a [(ByteString, ByteString)],
    pub content_type: Option<&'a str>,
}

pub use crate::topic::key_hash;

/// Why a strategy could not be built, set up or called.
///
/// Each message includes its cause's message (a wasmtime error with its whole chain) as well
/// as keeping the cause as `source()`: these errors reach operators as one log field or one
/// line on stderr printed with `{}`, and the cause is what they need to act on.
#[derive(Debug, thiserror::Error)]
pub enum StrategyError {
    #[error("wasm engine: {0:#}")]
    Engine(#[source] wasmtime::Error),
    #[error("wasm engine: cannot start the epoch ticker: {0}")]
    EpochTicker(#[source] std::io::Error),
    #[error("plugin {origin}: cannot {stage}: {source:#}")]
    Load {
        origin: String,
        stage: &'static str,
        #[source]
        source: wasmtime::Error,
    },
    #[error(
        "plugin {origin}: cannot link: it imports `{import}`, a WASI interface that language \
         runtimes (Python, JavaScript) call while running; allow an empty WASI context with \
         `{wasi_key} = true` in its [[shared.groups]] rule (`--wasi` for `sharq plugin check`)",
        wasi_key = host::WASI_KEY
    )]
    NeedsWasi { origin: String, import: String },
    /// Instantiation or `init` ran out of time; the message names the keys that grant more.
    #[error(
        "plugin {origin}: cannot {stage}: ran past its init deadline of {deadline_ms} ms \
         (`shared.plugin_init_deadline_ms`, or `init_deadline_ms` in its `[[shared.groups]]` \
         rule; `sharq plugin check --init-deadline-ms`)"
    )]
    InitTimeout {
        origin: String,
        stage: &'static str,
        deadline_ms: u64,
    },
    #[error("plugin shared.groups name `{pattern}`: cannot parse the glob: {source}")]
    Glob {
        pattern: String,
        #[source]
        source: globset::Error,
    },
    #[error("cannot read plugin file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("plugin {origin}: init refused the configuration: {message}")]
    InitRefused { origin: String, message: String },
    #[error("plugin {origin}: trapped: {trap}{}{}", logged(.last_error), wasi_hint(*.calls_wasi))]
    Trap {
        origin: String,
        /// The trap's one-line cause; `source` has the wasm backtrace too.
        trap: String,
        /// The last line the call logged at `error` before it trapped: a panic hook's message.
        last_error: Option<String>,
        #[source]
        source: wasmtime::Error,
        /// The trap came from a WASI import of a plugin loaded without WASI.
        calls_wasi: bool,
    },
    #[error("plugin {origin}: call exceeded its deadline of {deadline_ms} ms")]
    Timeout { origin: String, deadline_ms: u64 },
    #[error(
        "shared.plugin_cache_dir {path} is refused: {reason}; compiled plugins in it are loaded \
         as native code, so it must be owned by the user sharq runs as and writable by nobody \
         else (chmod 700), or set shared.plugin_cache_dir = \"\" to keep them in memory only"
    )]
    UnsafeCacheDir { path: String, reason: String },
    #[error("unknown built-in strategy `{0}` (known: {known})", known = builtin::names().join(", "))]
    UnknownBuiltin(String),
}

fn wasi_hint(calls_wasi: bool) -> String {
    if calls_wasi {
        format!(
            " (the plugin called WASI, which needs `{} = true`; a Rust guest does when it \
             panics, because the standard panic hook reads the environment: sharq-sdk's hook \
             logs the panic's message instead)",
            host::WASI_KEY
        )
    } else {
        String::new()
    }
}

fn logged(last_error: &Option<String>) -> String {
    match last_error {
        Some(line) => format!("; it logged: {line}"),
        None => String::new(),
    }
}

/// Counters of what a group's strategy did, published with the group's statistics.
///
/// Every message a Wasm group hands out is counted once, in exactly one of `selections`,
/// `spills`, `fallbacks` (by cause) and `pinned_messages`. `traps` and `timeouts` count failed
/// calls of any kind (membership calls too), not messages.
#[derive(Debug, Default)]
pub struct StrategyCounters {
    /// Messages delivered to the member the strategy chose.
    pub selections: AtomicU64,
    /// Messages whose chosen member was online but had no room (or could not take this
    /// message): the round robin placed them on a member with room.
    pub spills: AtomicU64,
    /// Messages the round robin placed because the strategy did not choose, by cause.
    pub fallbacks: FallbackCounters,
    /// Messages the round robin placed while the group was pinned to it after `max_failures`
    /// failures in a row; the strategy is no longer asked.
    pub pinned_messages: AtomicU64,
    /// Calls that trapped (a panic, running out of memory, an unreachable instruction).
    pub traps: AtomicU64,
    /// Calls stopped at their deadline.
    pub timeouts: AtomicU64,
    /// Instances rebuilt after a failed call. A failure that pins the group is not followed
    /// by a rebuild, so a pinned group shows one rebuild fewer than failures.
    pub rebuilds: AtomicU64,
    /// Plugin log lines dropped by the `log` import's rate limit.
    pub log_dropped: AtomicU64,
    /// New strategies swapped in while the group lived (config reload, admin API).
    pub reloads: AtomicU64,
    /// How long each `select` call took, answered or failed.
    pub select_latency: latency::LatencyHistogram,
}

/// Messages the round robin placed instead of the strategy, by why the strategy did not
/// choose.
#[derive(Debug, Default)]
pub struct FallbackCounters {
    /// The `select` call trapped.
    pub trap: AtomicU64,
    /// The `select` call ran past its deadline.
    pub timeout: AtomicU64,
    /// The answer named no current online member.
    pub invalid_answer: AtomicU64,
    /// The strategy answered `none`.
    pub declined: AtomicU64,
    /// An earlier failure had dropped the instance and its rebuild was not in place yet.
    pub rebuilding: AtomicU64,
}

impl FallbackCounters {
    pub fn total(&self) -> u64 {
        [
            &self.trap,
            &self.timeout,
            &self.invalid_answer,
            &self.declined,
            &self.rebuilding,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

/// The outcome of asking a group's strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Deliver to the member at this index.
    Member(usize),
    /// Let the native round robin choose.
    Fallback,
}

/// A group's strategy state.
pub struct Dispatcher {
    /// The guest instance; `None` for native round robin, or once pinned to it.
    instance: Option<WasmInstance>,
    /// What the instance was made from, to rebuild it after a failure and to tell a reload
    /// whether anything changed.
    resolved: Option<Arc<ResolvedStrategy>>,
    group: ByteString,
    /// The last state pushed per member, so `member-load` is sent only on change.
    pushed: HashMap<u64, (bool, bool), ahash::RandomState>,
    /// How many members the strategy was last told are online and not full. None means the
    /// group looks at every member before asking; otherwise it refreshes a few per message.
    told_room: usize,
    consecutive_failures: u32,
    /// True once the group gave up on its strategy until the next reload.
    pinned: bool,
    /// Failure warnings repeat per message when a strategy fails on many: one a second.
    failure_log: LogLimit,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("strategy", &self.label())
            .field("pinned", &self.pinned)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// The native round robin alone.
    pub fn native(group: ByteString) -> Dispatcher {
        Dispatcher {
            instance: None,
            resolved: None,
            group,
            pushed: HashMap::default(),
            told_room: 0,
            consecutive_failures: 0,
            pinned: false,
            failure_log: LogLimit::new(std::time::Duration::from_secs(1)),
        }
    }

    /// A dispatcher for `resolved` (a built, `init`-ed instance). Members are replayed into it
    /// by the group before it is used.
    pub fn wasm(
        group: ByteString,
        resolved: Arc<ResolvedStrategy>,
        instance: WasmInstance,
    ) -> Dispatcher {
        Dispatcher {
            instance: Some(instance),
            resolved: Some(resolved),
            ..Dispatcher::native(group)
        }
    }

    /// Builds the dispatcher `resolved` calls for (native when `None`), calling the guest's
    /// `init`. Membership is replayed separately.
    pub fn build(
        group: &ByteString,
        resolved: Option<Arc<ResolvedStrategy>>,
    ) -> Result<Dispatcher, StrategyError> {
        match resolved {
            None => Ok(Dispatcher::native(group.clone())),
            Some(resolved) => {
                let instance = resolved.instantiate(group)?;
                Ok(Dispatcher::wasm(group.clone(), resolved, instance))
            }
        }
    }

    pub fn resolved(&self) -> Option<&Arc<ResolvedStrategy>> {
        self.resolved.as_ref()
    }

    /// The strategy's name for logs and statistics.
    pub fn label(&self) -> String {
        match (&self.resolved, self.pinned) {
            (None, _) => "native_round_robin".to_owned(),
            (Some(r), false) => r.label.clone(),
            (Some(r), true) => format!("{} (pinned to native_round_robin after failures)", r.label),
        }
    }

    /// The strategy's name and version (a digest of its component), pinned or not.
    pub fn name_and_version(&self) -> (String, String) {
        match &self.resolved {
            None => (
                builtin::NATIVE_ROUND_ROBIN.to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            ),
            Some(r) => (r.label.clone(), r.version()),
        }
    }

    pub fn is_wasm(&self) -> bool {
        self.instance.is_some()
    }

    pub fn needs(&self) -> Needs {
        self.instance.as_ref().map(|i| i.needs).unwrap_or_default()
    }

    /// Tells the strategy about every member and its state; used on a new or rebuilt instance.
    pub fn replay(&mut self, members: &[(MemberInfo, MemberLoad)], counters: &StrategyCounters) {
        self.pushed.clear();
        self.told_room = 0;
        if let Some(instance) = self.instance.as_mut() {
            instance.begin_setup();
        }
        for (info, load) in members {
            self.member_joined(info, counters);
            self.update_load(info.id, *load, counters);
        }
        // A failed call has dropped the instance; a rebuilt one starts on the per-call deadline.
        if let Some(instance) = self.instance.as_mut() {
            instance.end_setup();
        }
    }

    pub fn member_joined(&mut self, info: &MemberInfo, counters: &StrategyCounters) {
        let Some(instance) = self.instance.as_mut() else {
            return;
        };
        if let Err(e) = instance.member_joined(info) {
            self.failed(e, counters);
        }
    }

    pub fn member_left(&mut self, id: u64, counters: &StrategyCounters) {
        if self.pushed.remove(&id).is_some_and(signature_has_room) {
            self.told_room -= 1;
        }
        let Some(instance) = self.instance.as_mut() else {
            return;
        };
        if let Err(e) = instance.member_left(id) {
            self.failed(e, counters);
        }
    }

    /// Pushes a member's state if its online/full signature changed since the last push.
    pub fn update_load(&mut self, id: u64, load: MemberLoad, counters: &StrategyCounters) {
        let Some(instance) = self.instance.as_mut() else {
            return;
        };
        let previous = self.pushed.get(&id).copied();
        let signature = load.signature(previous);
        if previous == Some(signature) {
            return;
        }
        self.pushed.insert(id, signature);
        match (
            previous.is_some_and(signature_has_room),
            signature_has_room(signature),
        ) {
            (false, true) => self.told_room += 1,
            (true, false) => self.told_room -= 1,
            _ => {}
        }
        if let Err(e) = instance.member_load(id, load) {
            self.failed(e, counters);
        }
    }

    /// True if the strategy was last told that some member is online and not full.
    pub fn told_someone_has_room(&self) -> bool {
        self.told_room > 0
    }

    /// Asks the strategy for a member. `locate` maps a member id to its index in the group and
    /// whether it is online. An answer it cannot locate as online is invalid, unless the
    /// strategy was last told that member is online: the group refreshes members' state a few
    /// at a time, so that news may be late, and the caller places the message elsewhere.
    pub fn choose(
        &mut self,
        message: &MessageView<'_>,
        counters: &StrategyCounters,
        locate: impl Fn(u64) -> Option<(usize, bool)>,
    ) -> Choice {
        let Some(instance) = self.instance.as_mut() else {
            return Choice::Fallback;
        };
        let started = std::time::Instant::now();
        let answer = instance.select(message);
        counters.select_latency.observe(started.elapsed());
        let dropped = instance.take_log_dropped();
        if dropped > 0 {
            counters.log_dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        let fallback = &counters.fallbacks;
        match answer {
            Ok(Some(id)) => match locate(id) {
                Some((index, online)) if online || self.told_online(id) => {
                    self.consecutive_failures = 0;
                    Choice::Member(index)
                }
                _ => {
                    fallback.invalid_answer.fetch_add(1, Ordering::Relaxed);
                    if let Some(suppressed) = self.failure_log.allow() {
                        tracing::warn!(group = %self.group, strategy = %self.label(), member = id, suppressed, "strategy chose no current online member; round robin delivers instead");
                    }
                    self.count_failure();
                    Choice::Fallback
                }
            },
            Ok(None) => {
                fallback.declined.fetch_add(1, Ordering::Relaxed);
                Choice::Fallback
            }
            Err(e) => {
                match e {
                    StrategyError::Timeout { .. } => &fallback.timeout,
                    _ => &fallback.trap,
                }
                .fetch_add(1, Ordering::Relaxed);
                self.failed(e, counters);
                Choice::Fallback
            }
        }
    }

    fn told_online(&self, id: u64) -> bool {
        self.pushed.get(&id).is_some_and(|(online, _)| *online)
    }

    /// A guest call failed: count it, and rebuild the instance (the caller replays members) or
    /// pin the group to the native round robin after too many failures in a row.
    fn failed(&mut self, error: StrategyError, counters: &StrategyCounters) {
        match &error {
            StrategyError::Timeout { .. } => counters.timeouts.fetch_add(1, Ordering::Relaxed),
            _ => counters.traps.fetch_add(1, Ordering::Relaxed),
        };
        if let Some(suppressed) = self.failure_log.allow() {
            tracing::warn!(group = %self.group, error = %error, suppressed, "strategy call failed; round robin delivers instead");
            if let StrategyError::Trap { source, .. } = &error {
                // With the wasm backtrace, for the plugin's author.
                tracing::debug!(group = %self.group, trap = %format!("{source:#}"), "strategy trap in full");
            }
        }
        // A trapped instance is poisoned: drop it now; `needs_rebuild` tells the group.
        self.instance = None;
        self.count_failure();
    }

    fn count_failure(&mut self) {
        self.consecutive_failures += 1;
        let max = self.resolved.as_ref().map_or(0, |r| r.max_failures);
        if self.consecutive_failures >= max && !self.pinned {
            self.pinned = true;
            self.instance = None;
            tracing::error!(group = %self.group, strategy = %self.label(), failures = self.consecutive_failures, "strategy keeps failing: group pinned to the native round robin until the next reload");
        }
    }

    /// True when the instance was dropped after a failure and should be rebuilt.
    pub fn needs_rebuild(&self) -> bool {
        self.instance.is_none() && self.resolved.is_some() && !self.pinned
    }

    /// What a rebuild needs: the strategy to instantiate again, when the instance was
    /// dropped after a failure and the group is not pinned.
    pub fn rebuild_source(&self) -> Option<Arc<ResolvedStrategy>> {
        if self.needs_rebuild() {
            self.resolved.clone()
        } else {
            None
        }
    }

    /// Installs an instance rebuilt (off the message path) from `from`, replaying `members`
    /// into it. Ignored when the dispatcher no longer needs it (a reload swapped it, or it was
    /// pinned meanwhile); a failed rebuild counts as a failure.
    pub fn install_rebuilt(
        &mut self,
        from: &Arc<ResolvedStrategy>,
        built: Result<WasmInstance, StrategyError>,
        members: &[(MemberInfo, MemberLoad)],
        counters: &StrategyCounters,
    ) {
        let current = self.resolved.as_ref().is_some_and(|r| Arc::ptr_eq(r, from));
        if !current || !self.needs_rebuild() {
            return;
        }
        counters.rebuilds.fetch_add(1, Ordering::Relaxed);
        match built {
            Ok(instance) => {
                self.instance = Some(instance);
                self.replay(members, counters);
            }
            Err(e) => {
                tracing::warn!(group = %self.group, error = %e, "cannot rebuild strategy instance");
                self.count_failure();
            }
        }
    }

    pub fn is_pinned(&self) -> bool {
        self.pinned
    }
}

#[cfg(test)]
mod tests {
    use super::MemberLoad;

    fn load(inflight: u32, capacity: u32) -> MemberLoad {
        MemberLoad {
            inflight,
            capacity,
            online: true,
        }
    }

    #[test]
    fn full_until_a_quarter_of_the_window_is_free() {
        assert_eq!(load(7, 8).signature(None), (true, false));
        assert_eq!(load(8, 8).signature(None), (true, true));
        // Once full, it stays full while more than 6 of 8 are busy.
        assert_eq!(load(7, 8).signature(Some((true, true))), (true, true));
        assert_eq!(load(6, 8).signature(Some((true, true))), (true, false));
        // Room again does not flip back to full before the window is really full.
        assert_eq!(load(7, 8).signature(Some((true, false))), (true, false));
    }

    #[test]
    fn tiny_windows_still_report_room_when_empty() {
        assert_eq!(load(1, 1).signature(Some((true, true))), (true, true));
        assert_eq!(load(0, 1).signature(Some((true, true))), (true, false));
        let offline = MemberLoad::default();
        assert_eq!(offline.signature(None), (false, true));
    }
}
